#!/bin/sh
# What the official nginx image's entrypoint does with templates: each
# /etc/nginx/templates/*.template becomes /etc/nginx/conf.d/*, with only the environment's
# defined variables substituted (nginx's own $variables stay).
set -eu
# As it does, first: /docker-entrypoint.d/*.envsh sourced (executable ones), *.sh run.
for script in /docker-entrypoint.d/*; do
  [ -f "$script" ] || continue
  case "$script" in
    *.envsh) if [ -x "$script" ]; then . "$script"; fi ;;
    *.sh) if [ -x "$script" ]; then "$script"; fi ;;
  esac
done
mkdir -p /etc/nginx/conf.d
for template in /etc/nginx/templates/*.template; do
  [ -e "$template" ] || continue
  defined=$(env | cut -d= -f1 | sed 's/^/$/' | tr '\n' ' ')
  envsubst "$defined" < "$template" > "/etc/nginx/conf.d/$(basename "$template" .template)"
done
exec "$@"
