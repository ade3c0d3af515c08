"""`rheostat dashboard`: optuna-dashboard over the cluster's studies, live and read-only.

The user's kubeconfig (or, in the chart's Deployment, the pod's ServiceAccount) is
the way in, so the dashboard shows exactly the studies its user may list. Two
watches fill the cache (:mod:`watch`); the storage (:mod:`live`) answers the
dashboard from it. The server is the standard library's, one thread per request,
so a slow page never holds up another.
"""

from __future__ import annotations

import argparse
import logging
import socketserver
import sys
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import optuna

from rheostat.backends.kubernetes.live import ClusterStorage, ObjectCache
from rheostat.backends.kubernetes.read import ReadError, connect
from rheostat.backends.kubernetes.watch import ClusterWatch

EXIT_INVALID = 2
SYNC_SECONDS = 30.0  # how long to wait for the first LISTs before serving anyway


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    """No access log: the dashboard polls every few seconds."""

    def log_message(self, format: str, *args: object) -> None:  # the base's name
        return


def serve(args: argparse.Namespace) -> int:
    """Watch, then serve until interrupted; returns the exit code."""
    try:
        import optuna_dashboard
    except ImportError:
        print(
            "error: optuna-dashboard is not installed: pip install 'rheostat[dashboard]'",
            file=sys.stderr,
        )
        return EXIT_INVALID
    try:
        api, default_namespace = connect(args.kubeconfig, args.context)
    except ReadError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_INVALID
    namespace = None if args.all_namespaces else (args.namespace or default_namespace)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cache = ObjectCache()
    watcher = ClusterWatch(api, namespace, cache)
    watcher.start()
    if not watcher.wait_synced(SYNC_SECONDS):
        for message in watcher.errors.values():
            print(f"warning: {message}", file=sys.stderr)
    storage = ClusterStorage(cache, namespaced=namespace is not None)
    server = make_server(
        args.host,
        args.port,
        optuna_dashboard.wsgi(storage),
        server_class=_ThreadingServer,
        handler_class=_QuietHandler,
    )
    where = "every namespace" if namespace is None else f"namespace {namespace}"
    print(
        f"optuna-dashboard for the studies in {where}, read-only: "
        f"http://{args.host}:{server.server_port}/",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        watcher.stop()
        server.server_close()
    return 0
