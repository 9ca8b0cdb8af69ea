"""Can a video encoder take frames of a given size? Asked by encoding a few frames in a
child process, because the honest answer is sometimes a crash.

SVT-AV1 (libsvtav1, lerobot's default codec) documents 4 <= width <= 16384 and
4 <= height <= 8704, but the build PyAV 15.1 bundles (libSvtAv1Enc 3.0) does worse,
measured here by encoding 5 frames at each size in a subprocess:

  width 4-24 at any height tried (16, 24, 64)      -> SIGFPE (exit 136, no message)
  width 25-64, height 4-64                         -> fine
  height 4, width 100-1000                         -> SIGSEGV
  width or height below 4                          -> avcodec_open2 error (EINVAL)

and libx264 (h264) refuses odd widths or heights with yuv420p. The limits are a property
of whichever encoder build is installed, so instead of a table that would go stale, the
exporter asks the encoder itself, at the exact sizes and settings it will use.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from shallowpi.data.isolated import ChildCrashed, run_isolated

PROBE_FRAMES = 5


def encoder_refusal(codec: str, pix_fmt: str, options: dict[str, str], width: int, height: int) -> str | None:
    """None if `codec` encodes `width`x`height` frames and they decode back, frame for
    frame; otherwise why not, in a few words ("crashed (SIGFPE)", the encoder's error)."""
    try:
        return run_isolated(_encode_a_few, codec, pix_fmt, options, width, height,
                            what=f"the {codec} encoder at {width}x{height}")
    except ChildCrashed as exc:
        return exc.how


def _encode_a_few(codec: str, pix_fmt: str, options: dict[str, str], width: int, height: int,
                  progress: Any = None) -> str | None:
    import io
    import os

    # SVT-AV1 prints its whole configuration to stderr for every stream unless told not to.
    os.environ.setdefault("SVT_LOG", "1")
    import av

    av.logging.set_libav_level(av.logging.ERROR)  # x264 reports its statistics otherwise

    # Gradients that move, like camera frames: a blank frame can take paths real ones do not.
    x = np.linspace(0, 255, width)[None, :, None]
    y = np.linspace(0, 255, height)[:, None, None]
    buffer = io.BytesIO()
    try:
        with av.open(buffer, "w", format="mp4") as container:
            stream = container.add_stream(codec, 30, options=options)
            stream.pix_fmt, stream.width, stream.height = pix_fmt, width, height
            for i in range(PROBE_FRAMES):
                image = np.broadcast_to((x + y + 20 * i) % 256, (height, width, 3)).astype(np.uint8)
                for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        buffer.seek(0)
        with av.open(buffer, "r") as container:
            decoded = sum(1 for _ in container.decode(video=0))
    except Exception as exc:  # av's errors: the encoder said no
        if "avcodec_open2" in str(exc):  # FFmpeg's wording for "these settings, no"
            return "refuses this size"
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if decoded != PROBE_FRAMES:
        return f"{decoded} of {PROBE_FRAMES} frames came back"
    return None
