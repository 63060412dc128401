import { Widget } from '@lumino/widgets';

import { cancelOperation } from './request';
import { OperationsStore } from './store';
import { IOperation, describeReason, formatElapsed } from './tokens';

/** A cell running now in an open notebook, with its own stop. */
export interface IRunningCell {
  id: string;
  label: string;
  /** Still running after a Stop's bound (C code, or it caught the stop). */
  stuck: boolean;
  stop: () => Promise<void>;
  interrupt: () => Promise<void>;
  reveal: () => void;
}

/** The sidebar: running cells, then running and recent operations of all kernels, a stop button per row. */
export class OperationsPanel extends Widget {
  private _timer: number;
  /** What the rows show but the elapsed times: the clock re-renders only when it changed. */
  private _shape = '';
  private _metas = new Map<HTMLElement, IOperation>();

  constructor(
    private store: OperationsStore,
    private reveal: (op: IOperation) => void,
    private runningCells: () => IRunningCell[] = () => []
  ) {
    super();
    this.id = 'jupyter-cancel-panel';
    this.addClass('jc-panel');
    this.title.caption = 'Running work (jupyter_cancel)';
    this.store.changed.connect(this.render, this);
    // Each second only the elapsed times change in place: replacing the rows would lose a
    // click whose mouse-down and mouse-up fall either side of the re-render.
    this._timer = window.setInterval(() => this.tick(), 1000);
    this.render();
  }

  dispose(): void {
    window.clearInterval(this._timer);
    this.store.changed.disconnect(this.render, this);
    super.dispose();
  }

  private shape(): string {
    const ops = this.store.operations().map(op => `${op.id}:${op.state}:${op.reason}`);
    const cells = this.runningCells().map(cell => `${cell.id}:${cell.stuck}`);
    return JSON.stringify([ops, cells]);
  }

  tick(): void {
    if (this.shape() !== this._shape) {
      this.render();
      return;
    }
    const now = Date.now() / 1000;
    for (const [meta, op] of this._metas) {
      meta.textContent = metaText(op, now);
    }
  }

  render(): void {
    const ops = this.store.operations();
    const now = Date.now() / 1000;
    this._shape = this.shape();
    this._metas.clear();
    const live = this.store.live().length;
    this.node.innerHTML = `
      <div class="jc-panel-head">Running work <span class="jc-panel-count">${live} running</span></div>
      <ul class="jc-list"></ul>
      ${ops.length ? '' : '<div class="jc-empty">Nothing has run yet. Work started with jc.run, jc.start, jc.progress or !cmd shows here.</div>'}`;
    const list = this.node.querySelector('ul')!;
    for (const cell of this.runningCells()) {
      const row = document.createElement('li');
      row.className = 'jc-row jc-cell-row jc-state-running';
      row.dataset.cell = cell.id;
      row.title = `${cell.label}: running\nclick to show the cell`;
      const head = document.createElement('div');
      head.className = 'jc-row-head';
      const name = document.createElement('span');
      name.className = 'jc-row-name';
      name.textContent = `▶ ${cell.label}`;
      const stop = document.createElement('button');
      stop.className = 'jc-row-stop jc-cell-stop jp-mod-styled jp-mod-warn';
      stop.textContent = '■ Stop cell';
      stop.title = `Stop ${cell.label} (its Python and its work)`;
      stop.onclick = event => {
        event.stopPropagation();
        stop.disabled = true;
        void cell.stop().catch(err => console.error('jupyter_cancel: cell stop failed', err));
      };
      head.appendChild(name);
      head.appendChild(stop);
      row.appendChild(head);
      if (cell.stuck) {
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
        row.appendChild(meta);
      }
      row.onclick = () => cell.reveal();
      list.appendChild(row);
    }
    for (const op of ops) {
      const row = document.createElement('li');
      row.className = `jc-row jc-state-${op.state}`;
      row.dataset.id = op.id;
      row.title = `${op.name}\ncell ${op.cell_id ?? '-'} · kernel ${op.kernel_id ?? '-'}\nclick to show its cell`;
      const head = document.createElement('div');
      head.className = 'jc-row-head';
      const name = document.createElement('span');
      name.className = 'jc-row-name';
      name.textContent = op.name;
      head.appendChild(name);
      if (op.state === 'running' || op.state === 'pending') {
        const stop = document.createElement('button');
        stop.className = 'jc-row-stop jp-mod-styled jp-mod-warn';
        stop.textContent = '■ Stop';
        stop.title = `Stop ${op.name}`;
        stop.onclick = event => {
          event.stopPropagation();
          stop.disabled = true;
          void cancelOperation(op.id).catch(err => {
            console.error('jupyter_cancel: stop failed', err);
            stop.disabled = false;
          });
        };
        head.appendChild(stop);
      }
      const meta = document.createElement('div');
      meta.className = 'jc-row-meta';
      meta.textContent = metaText(op, now);
      this._metas.set(meta, op);
      row.appendChild(head);
      row.appendChild(meta);
      row.onclick = () => this.reveal(op);
      list.appendChild(row);
    }
  }
}

/** A row's second line: state, reason, elapsed time, cell and kernel (and the cluster's
 * workers, for work submitted to Dask). */
function metaText(op: IOperation, now: number): string {
  const reason = op.reason ? ` — ${describeReason(op.reason)}` : '';
  const workers = op.kind === 'dask' ? (op.tags?.workers ?? []) : [];
  return (
    `${op.state}${reason} · ${formatElapsed((op.ended ?? now) - op.started)}` +
    (op.foreign ? ' · kernel-level' : ` · cell ${op.cell_id ? op.cell_id.slice(0, 8) : '-'}`) +
    ` · kernel ${op.kernel_id ? op.kernel_id.slice(0, 8) : '-'}` +
    (workers.length ? ` · on ${workers.join(', ')}` : '')
  );
}
