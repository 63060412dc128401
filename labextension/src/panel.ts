import { Widget } from '@lumino/widgets';

import { cancelOperation } from './request';
import { OperationsStore } from './store';
import { IOperation, describeReason, formatElapsed } from './tokens';

/** The sidebar: running and recent operations of all kernels, a stop button per row. */
export class OperationsPanel extends Widget {
  private _timer: number;

  constructor(
    private store: OperationsStore,
    private reveal: (op: IOperation) => void
  ) {
    super();
    this.id = 'jupyter-cancel-panel';
    this.addClass('jc-panel');
    this.title.caption = 'Running work (jupyter_cancel)';
    this.store.changed.connect(this.render, this);
    this._timer = window.setInterval(() => this.render(), 1000);
    this.render();
  }

  dispose(): void {
    window.clearInterval(this._timer);
    this.store.changed.disconnect(this.render, this);
    super.dispose();
  }

  render(): void {
    const ops = this.store.operations();
    const now = Date.now() / 1000;
    const rows = ops.map(op => {
      const row = document.createElement('tr');
      row.className = `jc-row jc-state-${op.state}`;
      row.dataset.id = op.id;
      const cells = [
        op.name,
        op.cell_id ? op.cell_id.slice(0, 8) : '',
        op.kernel_id ? op.kernel_id.slice(0, 8) : '',
        formatElapsed((op.ended ?? now) - op.started),
        op.state,
        describeReason(op.reason)
      ];
      for (const text of cells) {
        const td = document.createElement('td');
        td.textContent = text;
        td.title = text;
        row.appendChild(td);
      }
      const td = document.createElement('td');
      if (op.state === 'running' || op.state === 'pending') {
        const stop = document.createElement('button');
        stop.className = 'jc-row-stop jp-mod-styled jp-mod-warn';
        stop.textContent = '■';
        stop.title = `Stop ${op.name}`;
        stop.onclick = event => {
          event.stopPropagation();
          stop.disabled = true;
          void cancelOperation(op.id).catch(err => {
            console.error('jupyter_cancel: stop failed', err);
            stop.disabled = false;
          });
        };
        td.appendChild(stop);
      }
      row.appendChild(td);
      row.onclick = () => this.reveal(op);
      return row;
    });
    const live = this.store.live().length;
    this.node.innerHTML = `
      <div class="jc-panel-head">Running work <span class="jc-panel-count">${live} running</span></div>
      <table class="jc-table"><thead><tr>
        <th>name</th><th>cell</th><th>kernel</th><th>elapsed</th><th>state</th><th>reason</th><th></th>
      </tr></thead><tbody></tbody></table>
      ${ops.length ? '' : '<div class="jc-empty">Nothing has run yet. Work started with jc.run, jc.start, jc.progress or !cmd shows here.</div>'}`;
    const body = this.node.querySelector('tbody')!;
    rows.forEach(row => body.appendChild(row));
  }
}
