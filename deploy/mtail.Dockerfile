# mtail for the compose monitoring profile: Debian's package, the program in deploy/mtail/,
# reading nginx's JSON access log from the nginx-logs volume.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends mtail \
 && rm -rf /var/lib/apt/lists/*
COPY deploy/mtail/ /etc/mtail/
USER nobody
EXPOSE 3903
CMD ["mtail", "--progs", "/etc/mtail", "--logs", "/var/log/tickets/access.log", "--port", "3903", "--logtostderr"]
