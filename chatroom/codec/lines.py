"""Line framing without I/O: a byte stream in, complete lines out.

Both line protocols (the native one and IRC) and any client of them frame with
:class:`LineFramer`: it enforces the line limit and never rescans bytes it has already seen.
"""

from dataclasses import dataclass

#: Default longest line, in bytes, without its line end. Long enough for a paragraph of text,
#: short enough that a room of slow readers cannot be made to queue much per message.
DEFAULT_MAX_LINE = 4096

#: Bytes without any line end after which a connection is judged not to speak this protocol
#: (binary junk, a TLS hello on the plain port) and is closed. Above any sane ``max_line``.
NO_LINE_END_LIMIT = 64 * 1024

@dataclass(frozen=True, slots=True)
class LineTooLong:
    """Framer event: a line went over the limit; its bytes were discarded up to its line end."""

    size: int


@dataclass(frozen=True, slots=True)
class NoLineEnd:
    """Framer event: :data:`NO_LINE_END_LIMIT` bytes came without a line end; close the connection."""

    size: int


class LineFramer:
    """Splits a byte stream into lines of at most ``max_line`` bytes.

    ``feed(data)`` returns the list of complete lines (``bytes`` without the line end, ``\\r``
    stripped), with a :class:`LineTooLong` in place of each overlong line and a final
    :class:`NoLineEnd` if the stream stops looking like lines (more than ``no_line_end_limit``
    bytes without a line end). Memory held between calls is at
    most ``max_line`` bytes: an overlong partial line is dropped at once, and only counted from
    then on until its line end arrives.
    """

    __slots__ = ("max_line", "no_line_end_limit", "_partial", "_discarding", "_discarded_cr",
                 "_unterminated", "closed")

    def __init__(self, max_line=DEFAULT_MAX_LINE, no_line_end_limit=NO_LINE_END_LIMIT):
        if max_line < 1:
            raise ValueError("max_line must be at least 1")
        self.max_line = max_line
        #: Bytes without a line end after which the stream is given up (:class:`NoLineEnd`);
        #: None never gives up (a client facing a server: overlong lines are only skipped).
        self.no_line_end_limit = no_line_end_limit
        self._partial = b""  # the start of the current line; never holds a b"\n"
        self._discarding = 0  # > 0: bytes of an overlong line dropped so far
        self._discarded_cr = False  # the last byte dropped was b"\r" (not counted in a size)
        self._unterminated = 0  # bytes since the last line end (for NO_LINE_END_LIMIT)
        self.closed = False  # set after NoLineEnd: the framer then ignores input

    @property
    def buffered(self):
        """Bytes held waiting for a line end (bounded by ``max_line``)."""
        return len(self._partial)

    @property
    def unterminated(self):
        """Bytes fed since the last line end (held or, for an overlong line, only counted)."""
        return self._unterminated

    def feed(self, data):
        if self.closed or not data:
            return []
        parts = data.split(b"\n")
        tail = parts.pop()  # the bytes after the last line end: the start of the next line
        out = []
        if parts:
            # The first part ends the line in progress; only this one needs the saved state.
            first = parts[0]
            if self._discarding:
                raw = self._discarding + len(first)
                cr = first.endswith(b"\r") if first else self._discarded_cr
                self._discarding = 0
                parts[0] = None
                out.append(self._too_long(raw, raw - cr))
                if self.closed:
                    return out
            elif self._partial:
                parts[0] = self._partial + first
            self._partial = b""
            max_line = self.max_line
            for line in parts:
                if line is None:
                    continue
                raw = len(line)
                if line.endswith(b"\r"):
                    line = line[:-1]
                out.append(line if len(line) <= max_line else self._too_long(raw, len(line)))
                if self.closed:
                    return out
            self._unterminated = 0
        self._unterminated += len(tail)
        if self._discarding:
            if tail:
                self._discarding += len(tail)
                self._discarded_cr = tail.endswith(b"\r")
        elif tail:
            partial = self._partial + tail if self._partial else tail
            # One byte of slack for a '\r' that may precede the coming '\n'.
            if len(partial) > self.max_line + 1:
                self._discarding = len(partial)
                self._discarded_cr = partial.endswith(b"\r")
                partial = b""
            self._partial = partial
        limit = self.no_line_end_limit
        if limit is not None and self._unterminated > limit:
            out.append(self._too_long(self._unterminated, self._unterminated))
        return out

    def _too_long(self, raw, size):
        """The event for a line of ``raw`` bytes (``size`` without its ``\\r``) over the limit."""
        limit = self.no_line_end_limit
        if limit is not None and raw > limit:
            self.closed = True
            self._partial = b""
            self._discarding = self._unterminated = 0
            return NoLineEnd(raw)
        return LineTooLong(size)

    def eof(self):
        """The stream ended; returns the bytes of a final line cut off mid-way (dropped, not run)."""
        cut = len(self._partial) + self._discarding
        self._partial = b""
        self._discarding = 0
        return cut
