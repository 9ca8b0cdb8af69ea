"""Widgets both dashboards (recorder, executor) build their fitted panels from.

A panel whose text is cut to its width (a joint a row, the loop's lines) must be cut again
when the width changes, and a list longer than the terminal has rows must scroll. Neither
comes from a plain Static: the app's own Resize arrives before the layout that gives the
panels their new widths, and a Static does not scroll its own text (its height is the part
shown; `overflow-y: auto` on it scrolls nothing). `FittedPanel` says when its width
changed; `ScrollBox` is the box that scrolls one. A panel whose list is cut to its rows (the
recorder's episodes, the newest kept) reads them from `FittedPanel.text_rows`.
"""

from __future__ import annotations

from textual.containers import VerticalScroll
from textual.events import Resize
from textual.message import Message
from textual.widgets import Static


class FittedPanel(Static):
    """A panel whose text is cut to its width (the joints, the inference, the loop): it tells
    the app, with `Resized`, when its width changes, as after a terminal resize, so that the
    app cuts the text again at the width the layout gave it."""

    class Resized(Message):
        """A FittedPanel's width changed."""

    _width: int | None = None  # the width its text was last asked for at

    def on_resize(self, event: Resize) -> None:
        """Say so when the width changed (a new height is only new text)."""
        if event.size.width != self._width:
            self._width = event.size.width
            self.post_message(self.Resized())

    @property
    def text_width(self) -> int | None:
        """The cells it has for its text; None before the first layout (no limit)."""
        return self.content_region.width or None

    @property
    def text_rows(self) -> int | None:
        """The rows it has for its text: those of its height, or, where its height follows
        its text (`height: auto`), those its max-height lets it grow to (its height now is
        that of the text it was last given, fewer lines than it may show); None before the
        first layout or where nothing limits it."""
        height, most = self.styles.height, self.styles.max_height
        if height is not None and height.is_auto:
            if most is None or not most.is_cells:
                return None
            return max(int(most.value) - self.gutter.height, 1)
        return self.content_region.height or None


class ScrollBox(VerticalScroll):
    """The bordered box of a FittedPanel longer than the terminal has rows (the humanoid's 19
    joints at 80x24): it scrolls (arrow, page, Home and End keys when focused; the wheel), as
    tall as its text up to what its column has. The gutter is kept whether or not a bar
    shows, so that the width the text is cut to does not change with the bar."""

    DEFAULT_CSS = """
    ScrollBox {
        height: auto; max-height: 100%;
        scrollbar-gutter: stable; scrollbar-size-vertical: 1; scrollbar-size-horizontal: 0;
    }
    """
