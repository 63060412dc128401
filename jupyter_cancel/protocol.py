"""The wire between a kernel with the extension and the server: the message types both sides
use, and the environment variable that carries the kernel's settings. Both sides import it
from here (neither imports the other for it).

The kernel answers a ``jupyter_cancel_request`` on its control channel, while a cell is busy.

Content: ``{"action": "cancel" | "stop_cell" | "list" | "health" | "reassign", "operation_ids"?,
"cell_id"?, "client_session"?, "all"?, "reason"?, "wait"?, "to"?, "msg_id"?}``. ``reassign`` moves the live
work of ``client_session`` to the client session ``to`` (a reloaded page took it over);
``output`` returns the newest ``OUTPUT_TAIL`` characters of one operation's output;
``resources`` samples what each running process tree costs now (``{"resources": {id: …}}``,
the running-work panel asks while it is open). ``stop_cell`` needs ``cell_id``: the cell's
operations are cancelled as ``cancel`` does, and if it is the cell running now its Python gets
``Cancelled`` (``"running": true`` in the reply); if it is not, and ``msg_id`` names its
execute request still queued (Run All), that request runs no code when the kernel reaches it
(``"skipped": true``). Reply ``jupyter_cancel_reply``:
``{"status": "ok", "cancelled", "operations"}`` or ``{"status": "error", "ename", "evalue"}``.
Nothing a client sends can raise out of the handler.
"""

from __future__ import annotations

REQUEST = "jupyter_cancel_request"
REPLY = "jupyter_cancel_reply"
#: iopub message carrying one operation change: {"event", "operation"}.
EVENT = "jupyter_cancel_event"
#: What a request may ask for.
ACTIONS = ("cancel", "stop_cell", "list", "health", "reassign", "output", "resources")
#: Characters of an operation's output an ``output`` request returns (the newest).
OUTPUT_TAIL = 16 * 1024
#: The kernel extension's settings, as JSON, in the kernel's environment (set by the server).
SETTINGS_ENV = "JUPYTER_CANCEL_KERNEL_SETTINGS"
