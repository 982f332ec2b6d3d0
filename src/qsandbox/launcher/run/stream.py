"""The launcher's end of a sandbox's stream (common/mux.py): frames in, each to where it goes.

The engine's attach stream carries the entry point's stdout (our frames, cut and joined anywhere
by the engine) and its stderr (the entry point's own notes, plain text). `pump` reads it to its end:
the script's output to `output`, the relay's channels to the `Relay` (which never blocks the
reader), /output to the `OutputReceiver`. Everything from the sandbox is hostile: a broken frame
ends the stream, and so the sandbox (the dead-man switch), with one line saying so.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ...common import handoff, mux

if TYPE_CHECKING:
    from ..engine.sandbox import Attachment
    from .relay import Relay
    from .transfer import Inputs, OutputReceiver


def control(message: bytes) -> bytes:
    """A control message (common/handoff.py) as its frame."""
    return mux.frame(mux.Type.CONTROL, mux.CONTROL, message)


ALIVE = control(handoff.ALIVE)


def send_start(attachment: Attachment, start: handoff.Start, inputs: Inputs | None) -> None:
    """Send the start message and stream the inputs, a frame at a time (never the whole archive)."""
    attachment.send(control(handoff.encode_start(start)))
    if inputs is not None:
        for chunk in inputs.chunks(mux.MAX_PAYLOAD):
            attachment.send(mux.frame(mux.Type.DATA, mux.INPUTS, chunk))
    attachment.send(mux.frame(mux.Type.EOF, mux.INPUTS))


def pump(
    attachment: Attachment,
    *,
    output: Callable[[int, bytes], None],
    relay: Relay,
    receiver: OutputReceiver | None,
    say: Callable[[str], None],
) -> None:
    """Read the stream to its end. `output(1 or 2, data)`: the script's stdout, stderr (and the
    entry point's own notes, as stderr)."""
    decoder = mux.Decoder()
    try:
        for stream, data in attachment.frames():
            if stream != 1:
                output(2, data)
                continue
            for f in decoder.feed(data):
                if f.channel >= mux.FIRST_RELAY:
                    relay.on_frame(f)
                elif f.channel in (mux.STDOUT, mux.STDERR):
                    if f.type == mux.Type.DATA:
                        output(f.channel, f.payload)
                elif f.channel == mux.OUTPUT:
                    if receiver is None:
                        continue  # not asked for: dropped
                    if f.type == mux.Type.DATA:
                        receiver.feed(f.payload)
                    elif f.type == mux.Type.EOF:
                        receiver.end()
                    if receiver.overflowed:  # past any budget: end the stream, and so the sandbox
                        attachment.close()
                        return
                else:
                    raise mux.ProtocolError(f"{f.type.name} frame on channel {f.channel}")
    except mux.ProtocolError as e:
        say(f"the sandbox broke the stream's protocol ({e}); it was stopped")
        attachment.close()
    except OSError:
        pass
    finally:
        relay.close()
