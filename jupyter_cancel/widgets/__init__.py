"""The operation widget: name, state, elapsed, progress, output tail and a stop button."""

from .operation import OperationWidget as OperationWidget
from .operation import WidgetFeeder as WidgetFeeder

__all__ = ["OperationWidget", "WidgetFeeder"]
