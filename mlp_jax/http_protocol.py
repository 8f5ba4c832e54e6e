"""uvicorn's httptools protocol with a graceful close of idle connections at shutdown.

At shutdown uvicorn closes every connection that has no request in progress at once. A
connection counts as idle when its next request has not been parsed yet, so a request
whose bytes are already on their way (a keep-alive client's next request, or the first
request of a connection accepted a moment before) is cut off: the socket is closed with
unread data and the client gets a connection reset, with no answer and no way to tell
whether the request was run. RFC 9112 section 9.6 asks servers to close gracefully
instead.

:class:`GracefulHttpToolsProtocol` gives an idle connection :data:`IDLE_GRACE_S` to
deliver a request after shutdown begins. A request that arrives is served as usual (the
server still runs the model until every connection is done) and answered with
``Connection: close``; a connection still idle after the grace is closed. uvicorn stops
accepting new connections first, so this only finishes what clients already sent.
Used by ``python -m mlp_jax.serve``.
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

#: Seconds an idle connection may still deliver a request after shutdown begins.
IDLE_GRACE_S = 0.5


class GracefulHttpToolsProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` whose :meth:`shutdown` lets an idle connection's request arrive."""

    _draining = False

    def shutdown(self) -> None:
        """Called by the server at shutdown: a busy connection closes after its response, an idle
        one after :data:`IDLE_GRACE_S` or after the response to a request that arrives meanwhile."""
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False
        elif not self._draining:
            self._draining = True
            self.loop.call_later(IDLE_GRACE_S, self._close_if_idle)

    def _close_if_idle(self) -> None:
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False  # a request arrived in the grace: close after its response
        elif not self.transport.is_closing():
            self.transport.close()

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        if self._draining and self.cycle is not None:
            self.cycle.keep_alive = False  # answered with Connection: close
