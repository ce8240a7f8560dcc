"""gunicorn settings for one API replica: `gunicorn -c deploy/gunicorn.conf.py 'service.api.app:create_app()'`."""

import os

bind = os.environ.get("BIND", "0.0.0.0:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "1"))
# uvloop: 18% more single-ticket GETs through the whole stack (make bench, docs/performance.md).
worker_class = os.environ.get("WORKER_CLASS", "aiohttp.GunicornUVLoopWebWorker")
# Longer than nginx's upstream keepalive_timeout (60 s), so that nginx always closes an idle
# upstream connection first and never sends a request down one the worker just closed.
# It also closes a connection that has not sent a whole request this long after it opened: a
# client that trickles its header reaches no further (docs/trust.md#limits-and-bad-input).
keepalive = int(os.environ.get("KEEPALIVE_S", "75"))
# A worker that stops answering its master for this long is replaced.
timeout = 30
# SIGTERM: stop accepting, finish in-flight requests, exit within this (less than compose's
# stop_grace_period of 30 s).
graceful_timeout = 20
# Access logs come from nginx; the workers log errors and lifecycle only.
accesslog = None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info")
# One format for gunicorn's lines and the service's own (its start-up line names the API
# keys in use; a Redis failure is a warning), on stderr, named after the replica so that
# the local stack's merged output says whose line it is.
_name = os.environ.get("LOG_NAME", "api")
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": f"%(asctime)s {_name} [%(process)d] %(levelname)s %(name)s: %(message)s"},
    },
    "handlers": {
        "stderr": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"},
    },
    "root": {"level": "WARNING", "handlers": ["stderr"]},
    "loggers": {
        "gunicorn.error": {"level": loglevel.upper(), "handlers": ["stderr"], "propagate": False},
        "gunicorn.access": {"level": "WARNING", "handlers": ["stderr"], "propagate": False},
        "service": {"level": loglevel.upper(), "handlers": ["stderr"], "propagate": False},
    },
}
proc_name = "tickets-api"
# Several replicas run side by side on one host in the local stack; gunicorn's control
# socket would be shared between them, and nothing here uses it.
control_socket_disable = True


# prometheus_client's multiprocess mode: every worker writes its metrics to files in
# PROMETHEUS_MULTIPROC_DIR and a scrape of any worker adds them all up. Stale files from a
# previous run would be added too, so the directory is emptied at start; a dead worker's
# gauges are dropped when it exits.
def on_starting(server):  # type: ignore[no-untyped-def]
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        os.makedirs(path, exist_ok=True)
        for name in os.listdir(path):
            if name.endswith(".db"):
                os.remove(os.path.join(path, name))


def child_exit(server, worker):  # type: ignore[no-untyped-def]
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
