"""Progress bars that read right both live and in a saved notebook.

``tqdm`` here is ``tqdm.auto``'s: a text bar in a terminal, an ipywidgets bar in a Jupyter kernel.
A widget bar alone saves badly: the notebook file keeps only the text form the bar had when it
was first displayed (``0%| | 0/1``), so an executed notebook reads as unfinished. In a kernel the
bar is therefore displayed with a display id and its output is replaced by the final text when it
closes (``stage 1: 100%| 200/200 [00:41<00:00]``); papermill and JupyterLab both apply that update.

A widget is invisible to ``papermill --log-output``, which logs only what a kernel prints (a
display's updates are not logged): a bar in a kernel therefore also prints its text form to stderr
once a minute (:data:`HEARTBEAT_S`) while it runs, so a long cell in a terminal shows its progress
and ETA.
"""
from __future__ import annotations

import sys
import time

from tqdm.auto import tqdm as _auto_tqdm

_IN_KERNEL = False
if "IPython" in sys.modules:  # tqdm.auto picks the widget bar only in a kernel, where IPython is loaded
    try:  # a Jupyter kernel: tqdm.auto resolved to the widget bar (imported only then: ipywidgets
        # and IPython cost ~0.2 s, a tenth of a command line's start)
        from tqdm.notebook import tqdm_notebook as _notebook_tqdm

        _IN_KERNEL = issubclass(_auto_tqdm, _notebook_tqdm)
    except ImportError:  # no ipywidgets
        pass

HEARTBEAT_S = 60.0

if _IN_KERNEL:
    from IPython.display import display as _display

    class tqdm(_notebook_tqdm):  # noqa: N801 (the name callers know)
        """The widget bar, displayed under a display id so that :meth:`close` can leave its final
        text in the saved output (module docstring)."""

        def __init__(self, *args, **kwargs):
            wanted = kwargs.pop("display", True)
            self._handle = None
            self._last_line = time.time()
            super().__init__(*args, display=False, **kwargs)
            if wanted and not self.disable and getattr(self, "delay", 0) <= 0:
                self._handle = _display(self.container, display_id=True)
                self.displayed = True

        def display(self, *args, **kwargs):
            shown = super().display(*args, **kwargs)
            now = time.time()
            if not self.disable and now - getattr(self, "_last_line", now) >= HEARTBEAT_S:
                self._last_line = now
                print(heartbeat_line(self), file=sys.stderr, flush=True)
            return shown

        def close(self):
            if self.disable:
                return
            leave = self.leave
            super().close()
            if self._handle is not None:
                # the saved text: the final state when the bar stays, nothing when it goes away
                final = self.container.__repr__(True) if leave else ""
                self._handle.update({"text/plain": final}, raw=True)
                self._handle = None
else:
    tqdm = _auto_tqdm



def heartbeat_line(bar) -> str:
    """One line of a bar's state, as a terminal bar would print it (``stage 2:  40%| 400/1000
    [02:10<03:15, 3.07it/s]``)."""
    return bar.format_meter(**{**bar.format_dict, "ncols": 0})


__all__ = ["tqdm", "heartbeat_line", "HEARTBEAT_S"]
