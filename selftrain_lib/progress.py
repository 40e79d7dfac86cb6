"""Progress bars that read right both live and in a saved notebook.

``tqdm`` here is ``tqdm.auto``'s: a text bar in a terminal, an ipywidgets bar in a Jupyter kernel.
A widget bar alone saves badly: the notebook file keeps only the text form the bar had when it
was first displayed (``0%| | 0/1``), so an executed notebook reads as unfinished. In a kernel the
bar is therefore displayed with a display id and its output is replaced by the final text when it
closes (``stage 1: 100%| 200/200 [00:41<00:00]``); papermill and JupyterLab both apply that update.
"""
from __future__ import annotations

from tqdm.auto import tqdm as _auto_tqdm

try:  # a Jupyter kernel: tqdm.auto resolved to the widget bar
    from tqdm.notebook import tqdm_notebook as _notebook_tqdm

    _IN_KERNEL = issubclass(_auto_tqdm, _notebook_tqdm)
except ImportError:  # no ipywidgets
    _IN_KERNEL = False

if _IN_KERNEL:
    from IPython.display import display as _display

    class tqdm(_notebook_tqdm):  # noqa: N801 (the name callers know)
        """The widget bar, displayed under a display id so that :meth:`close` can leave its final
        text in the saved output (module docstring)."""

        def __init__(self, *args, **kwargs):
            wanted = kwargs.pop("display", True)
            self._handle = None
            super().__init__(*args, display=False, **kwargs)
            if wanted and not self.disable and getattr(self, "delay", 0) <= 0:
                self._handle = _display(self.container, display_id=True)
                self.displayed = True

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

__all__ = ["tqdm"]
