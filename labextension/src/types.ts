/** Operation JSON as the server and the kernel report it. */
export interface IOperation {
  id: string;
  name: string;
  kind: string;
  kernel_id: string | null;
  client_session: string | null;
  cell_id: string | null;
  policy: 'cancel' | 'continue' | 'kernel' | 'detach';
  state: 'pending' | 'running' | 'completed' | 'failed' | 'cancelled';
  reason: string | null;
  message?: string | null;
  pids: number[];
  started: number;
  ended: number | null;
  exit_code: number | null;
  progress: { n: number; total: number | null } | null;
  /** A process of a kernel without the kernel extension (R, bash, …): kernel-level, no cell. */
  foreign?: boolean;
  /** What its tree costs (live while running) and cost (peak, CPU seconds), if it was
   * sampled: its widget was shown, or the panel was open. */
  resources?: IResources;
  /** Seconds from the cancel request to the work gone (cancelled operations). */
  cancel_latency?: number;
  /** Free-form tags; a Dask submission (kind `dask`) names the `workers` its tasks run on. */
  tags?: { workers?: string[]; [key: string]: unknown };
}

/** What one process tree costs: now (CPU % of one core, RSS bytes, processes) and so far. */
export interface IResources {
  cpu_percent?: number;
  rss?: number;
  processes?: number;
  peak_rss?: number;
  cpu_seconds?: number;
}

/**
 * What to cancel: the same selector the registry, the kernel's control message and the
 * server's REST bodies use (jupyter_cancel.core.selector.Selector). Fields combine (AND);
 * an empty selector matches nothing; `all` alone names every operation.
 */
export interface ISelector {
  operation_ids?: string[];
  cell_id?: string;
  client_session?: string;
  kernel_id?: string;
  all?: boolean;
}

/** A cancel request: a selector and what triggered it. */
export interface ICancelRequest extends ISelector {
  reason?: string;
}

/**
 * The kernel's control message (jupyter_cancel_request). `stop_cell` (with `cell_id` only)
 * cancels that cell's work and, if it is the cell running now, raises jc.Cancelled in it;
 * its reply says `running`.
 */
export interface IControlRequest extends ICancelRequest {
  action: 'cancel' | 'stop_cell' | 'list' | 'health';
  /** stop_cell: the cell's execute request, skipped if it is still queued. */
  msg_id?: string;
}

/** What the kernel reports when a stopped cell still runs after its bound. */
export interface ICellStuck {
  kernel_id: string | null;
  cell_id: string;
  seconds: number;
  in_native_code: boolean;
}

/** One message of the server's event stream. */
export interface IOperationEvent {
  event: 'snapshot' | 'started' | 'cancel_requested' | 'ended' | 'progress';
  kernel_id?: string;
  operation?: IOperation;
  operations?: IOperation[];
}

export interface ISettings {
  stopButtonScope: 'kernel' | 'session';
  cancelOnClose: boolean;
  stopBeforeRerun: boolean;
}

/** Words for a reason, as the widget and the panel show it. */
export function describeReason(reason: string | null): string {
  const words: { [key: string]: string } = {
    user: 'by you',
    cell_rerun: 'cell re-run',
    cell_deleted: 'cell deleted',
    kernel_interrupt: 'kernel interrupted',
    kernel_restart: 'kernel restarted',
    kernel_shutdown: 'kernel shut down',
    kernel_died: 'kernel died',
    client_disconnected: 'browser disconnected',
    tab_closed: 'notebook closed',
    timeout: 'timed out',
    server_shutdown: 'server stopped'
  };
  return reason ? (words[reason] ?? reason) : '';
}

export function formatElapsed(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  const m = Math.floor(s / 60);
  const h = Math.floor(m / 60);
  if (h) {
    return `${h}h${String(m % 60).padStart(2, '0')}m`;
  }
  return m ? `${m}m${String(s % 60).padStart(2, '0')}s` : `${s}s`;
}
