import { DOMWidgetModel, DOMWidgetView, ISerializers } from '@jupyter-widgets/base';

import { cancelOperation, controlRequest } from './request';
import { describeReason, formatElapsed } from './types';

export const MODULE_NAME = 'jupyter-cancel';
export const MODULE_VERSION = '0.1.0';

/** One operation shown in a cell: name, state, elapsed, progress, output tail, stop. */
export class OperationModel extends DOMWidgetModel {
  defaults(): any {
    return {
      ...super.defaults(),
      _model_name: 'OperationModel',
      _model_module: MODULE_NAME,
      _model_module_version: MODULE_VERSION,
      _view_name: 'OperationView',
      _view_module: MODULE_NAME,
      _view_module_version: MODULE_VERSION,
      op_id: '',
      name: '',
      kind: 'process',
      state: 'running',
      reason: null,
      exit_code: null,
      started: 0,
      ended: null,
      n: 0,
      total: null,
      tail: '',
      rate: '',
      resources: '',
      hidden: false
    };
  }

  static serializers: ISerializers = { ...DOMWidgetModel.serializers };
}

export class OperationView extends DOMWidgetView {
  private _title!: HTMLElement;
  private _status!: HTMLElement;
  private _bar!: HTMLElement;
  private _fill!: HTMLElement;
  private _count!: HTMLElement;
  private _tail!: HTMLElement;
  private _stop!: HTMLButtonElement;
  private _timer: number | undefined;

  render(): void {
    this.el.classList.add('jc-op');
    this.el.innerHTML = `
      <div class="jc-op-head">
        <span class="jc-op-dot"></span>
        <span class="jc-op-name"></span>
        <span class="jc-op-status"></span>
        <button class="jc-op-stop jp-mod-styled jp-mod-warn" title="Stop this work now (works while the cell is busy)">■ Stop</button>
      </div>
      <div class="jc-op-bar"><div class="jc-op-fill"></div></div>
      <div class="jc-op-count"></div>
      <pre class="jc-op-tail"></pre>`;
    this._title = this.el.querySelector('.jc-op-name')!;
    this._status = this.el.querySelector('.jc-op-status')!;
    this._bar = this.el.querySelector('.jc-op-bar')!;
    this._fill = this.el.querySelector('.jc-op-fill')!;
    this._count = this.el.querySelector('.jc-op-count')!;
    this._tail = this.el.querySelector('.jc-op-tail')!;
    this._stop = this.el.querySelector('.jc-op-stop')!;
    this._stop.addEventListener('click', () => void this.stop());
    this.listenTo(this.model, 'change', () => this.update());
    this._timer = window.setInterval(() => this.renderStatus(), 1000);
    this.update();
  }

  remove(): void {
    window.clearInterval(this._timer);
    super.remove();
  }

  update(): void {
    const m = this.model;
    const state = m.get('state') as string;
    this.el.dataset.state = state;
    this.el.style.display = m.get('hidden') ? 'none' : ''; // jc.progress(leave=False), completed
    this._title.textContent = m.get('name');
    const n = m.get('n') as number;
    const total = m.get('total') as number | null;
    const determinate = typeof total === 'number' && total > 0;
    this._bar.classList.toggle('jc-op-indeterminate', !determinate && state === 'running');
    this._bar.style.display =
      m.get('kind') === 'process' && !determinate && state !== 'running' ? 'none' : '';
    this._fill.style.width = determinate
      ? `${Math.min(100, (100 * n) / total!)}%`
      : state === 'running'
        ? ''
        : '100%';
    const rate = m.get('rate') as string;
    this._count.textContent = determinate
      ? `${n} / ${total} (${Math.floor(Math.min(100, (100 * n) / total!))}%)${rate ? ' · ' + rate : ''}`
      : n
        ? `${n}${rate ? ' · ' + rate : ''}`
        : rate;
    const follow = this._tail.scrollTop + this._tail.clientHeight >= this._tail.scrollHeight - 4;
    this._tail.textContent = m.get('tail');
    this._tail.style.display = m.get('tail') ? '' : 'none';
    if (follow) {
      this._tail.scrollTop = this._tail.scrollHeight; // keep showing the newest lines
    }
    this._stop.style.display = state === 'running' || state === 'pending' ? '' : 'none';
    this.renderStatus();
  }

  private renderStatus(): void {
    const m = this.model;
    const state = m.get('state') as string;
    const end = (m.get('ended') as number | null) ?? Date.now() / 1000;
    const elapsed = formatElapsed(end - (m.get('started') as number));
    // An exit code only for a process: a progress loop or a scope has none to show.
    const code = m.get('exit_code') as number | null;
    const exit =
      m.get('kind') === 'process' && code !== null && code !== undefined ? ` · exit ${code}` : '';
    let text: string;
    if (state === 'cancelled') {
      const reason = m.get('reason') as string | null;
      text = `Stopped — ${describeReason(reason)}${exit}`;
    } else if (state === 'completed' || state === 'failed') {
      text = `${state === 'completed' ? 'Done' : 'Failed'}${exit}`;
    } else if (this._stop.disabled) {
      text = 'Stopping…';
    } else {
      text = 'Running';
    }
    const resources = m.get('resources') as string;
    this._status.textContent = `${text} · ${elapsed}${resources ? ' · ' + resources : ''}`;
  }

  /** Control channel first (answered while the cell is busy), the server's REST as fallback. */
  async stop(): Promise<void> {
    const id = this.model.get('op_id') as string;
    this._stop.disabled = true;
    this.renderStatus();
    const kernel = (this.model.widget_manager as any).kernel;
    let reply = null;
    if (kernel) {
      try {
        reply = await controlRequest(kernel, {
          action: 'cancel',
          operation_ids: [id],
          reason: 'user'
        });
      } catch (err) {
        console.warn('jupyter_cancel: control request failed', err);
      }
    }
    if (!reply || reply.status !== 'ok') {
      try {
        await cancelOperation(id, 'user');
      } catch (err) {
        console.error('jupyter_cancel: could not stop', id, err);
        this._stop.disabled = false;
      }
    }
    const op = reply?.operations?.find((o: any) => o.id === id);
    if (op && op.state !== 'running') {
      // The final state is also synced by the kernel; this shows it at once.
      this.model.set({
        state: op.state,
        reason: op.reason,
        exit_code: op.exit_code,
        ended: op.ended
      });
    }
  }
}
