"""gunicorn settings for one API replica: `gunicorn -c deploy/gunicorn.conf.py 'service.app:create_app()'`."""

import os

bind = os.environ.get("BIND", "0.0.0.0:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "1"))
worker_class = os.environ.get("WORKER_CLASS", "aiohttp.GunicornWebWorker")
# Longer than nginx's upstream keepalive_timeout (60 s), so that nginx always closes an idle
# upstream connection first and never sends a request down one the worker just closed.
keepalive = 75
# A worker that stops answering its master for this long is replaced.
timeout = 30
# SIGTERM: stop accepting, finish in-flight requests, exit within this (less than compose's
# stop_grace_period of 30 s).
graceful_timeout = 20
# Access logs come from nginx; the workers log errors and lifecycle only.
accesslog = None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info")
proc_name = "tickets-api"
# Several replicas run side by side on one host in the local stack; gunicorn's control
# socket would be shared between them, and nothing here uses it.
control_socket_disable = True
