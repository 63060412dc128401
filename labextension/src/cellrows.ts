/** A cell running now in an open notebook, with its own stop. */
export interface IRunningCell {
  id: string;
  label: string;
  /** Still running after a Stop's bound (C code, or it caught the stop). */
  stuck: boolean;
  /** Sent to the kernel, waiting behind the cell that runs now. */
  queued?: boolean;
  /** Queued and stopped: the kernel will skip it. */
  skipped?: boolean;
  stop: () => Promise<void>;
  interrupt: () => Promise<void>;
  reveal: () => void;
}

/** A running or queued cell's row in the panel: its name, its Stop, and — stuck after a Stop —
 * the way out (interrupt the kernel). A click shows the cell. */
export function cellRow(cell: IRunningCell): HTMLLIElement {
  const row = document.createElement('li');
  const state = cell.skipped
    ? 'jc-cell-skipped-row'
    : cell.queued
      ? 'jc-cell-queued'
      : 'jc-state-running';
  row.className = `jc-row jc-cell-row ${state}`;
  row.dataset.cell = cell.id;
  row.title = `${cell.label}: ${cell.queued ? 'queued' : 'running'}\nclick to show the cell`;
  row.onclick = () => cell.reveal();
  const head = document.createElement('div');
  head.className = 'jc-row-head';
  const name = document.createElement('span');
  name.className = 'jc-row-name';
  // (Plain text for the queued states: not every system font has the media glyphs.)
  name.textContent = cell.skipped
    ? `${cell.label} (will be skipped)`
    : cell.queued
      ? `${cell.label} (queued)`
      : `▶ ${cell.label}`;
  head.appendChild(name);
  row.appendChild(head);
  if (cell.skipped) {
    return row; // stopped while queued: the kernel passes it by, nothing left to stop
  }
  head.appendChild(stopButton(cell));
  if (cell.stuck) {
    row.appendChild(stuckLine(cell));
  }
  return row;
}

function stopButton(cell: IRunningCell): HTMLButtonElement {
  const stop = document.createElement('button');
  stop.className = 'jc-row-stop jc-cell-stop jp-mod-styled jp-mod-warn';
  stop.textContent = '■ Stop';
  stop.title = cell.queued
    ? `Stop ${cell.label} before it starts: the kernel skips it, the cells around it run`
    : `Stop ${cell.label} (its Python and its work)`;
  stop.setAttribute('aria-label', stop.title);
  stop.onclick = event => {
    event.stopPropagation();
    stop.disabled = true;
    void cell.stop().catch(err => console.error('jupyter_cancel: cell stop failed', err));
  };
  return stop;
}

/** Still running after a Stop's bound (native code?): interrupting the kernel is what is left. */
function stuckLine(cell: IRunningCell): HTMLElement {
  const meta = document.createElement('div');
  meta.className = 'jc-row-meta jc-cell-stuck';
  meta.textContent = 'still running after Stop (native code?) ';
  const interrupt = document.createElement('button');
  interrupt.className = 'jc-cell-interrupt jp-mod-styled jp-mod-warn';
  interrupt.textContent = 'Interrupt kernel';
  interrupt.title = 'Interrupt the kernel: stops all of its work';
  interrupt.onclick = event => {
    event.stopPropagation();
    void cell.interrupt();
  };
  meta.appendChild(interrupt);
  return meta;
}
