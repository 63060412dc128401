import { NotebookPanel } from '@jupyterlab/notebook';
import { Kernel } from '@jupyterlab/services';
import { Widget } from '@lumino/widgets';

import { stopIcon } from './icons';
import { cancelKernel, controlRequest } from './request';
import { CancelSettings } from './settings';
import { OperationsStore, coalesced } from './store';
import { ICancelRequest, IControlRequest } from './types';

/** A toolbar button "stop all work of this notebook" with a count badge. */
export class StopAllButton extends Widget {
  private _badge: HTMLElement;

  constructor(
    private panel: NotebookPanel,
    private store: OperationsStore,
    private settings: CancelSettings
  ) {
    super();
    this.addClass('jc-stop-all');
    const button = document.createElement('button');
    button.className = 'jp-ToolbarButtonComponent jp-mod-minimal jp-Button';
    button.title =
      'Stop all work of this notebook (processes, LLM runs, builds) — not an interrupt';
    button.appendChild(stopIcon.element({ tag: 'span' }));
    const label = document.createElement('span');
    label.className = 'jc-stop-all-label';
    label.textContent = 'Stop work';
    button.appendChild(label);
    this._badge = document.createElement('span');
    this._badge.className = 'jc-badge';
    button.appendChild(this._badge);
    button.onclick = () => void stopNotebookWork(this.panel, this.settings);
    this.node.appendChild(button);
    this.store.changed.connect(this._schedule, this);
    this.panel.sessionContext.kernelChanged.connect(this.refresh, this);
    this.refresh();
  }

  private _schedule = coalesced(() => this.refresh());

  dispose(): void {
    this.store.changed.disconnect(this._schedule, this);
    super.dispose();
  }

  private kernel(): Kernel.IKernelConnection | null {
    return this.panel.sessionContext.session?.kernel ?? null;
  }

  refresh(): void {
    const kernel = this.kernel();
    let live = kernel ? this.store.live(kernel.id) : [];
    if (kernel && this.settings.current.stopButtonScope === 'session') {
      live = live.filter(op => op.client_session === kernel.clientId);
    }
    this._badge.textContent = live.length ? String(live.length) : '';
    this.node.dataset.count = String(live.length);
  }
}

/** Stop all work of a notebook's kernel (or only this page's, with the setting `session`). */
export async function stopNotebookWork(
  panel: NotebookPanel | null,
  settings: CancelSettings
): Promise<void> {
  const kernel = panel?.sessionContext.session?.kernel;
  if (!kernel) {
    return;
  }
  const body: ICancelRequest = { reason: 'user' };
  if (settings.current.stopButtonScope === 'session') {
    body.client_session = kernel.clientId;
  }
  try {
    await cancelKernel(kernel.id, body);
  } catch {
    // No server extension (or it failed): ask the kernel directly.
    const content: IControlRequest = body.client_session
      ? { action: 'cancel', client_session: body.client_session, reason: 'user' }
      : { action: 'cancel', all: true, reason: 'user' };
    await controlRequest(kernel, content);
  }
}

/** "N running" in the status bar; a click opens the Running work panel. */
export class RunningStatus extends Widget {
  constructor(
    private store: OperationsStore,
    open: () => void
  ) {
    super({ node: document.createElement('button') });
    this.addClass('jc-status');
    this.node.title = 'Running work (jupyter_cancel): click to open the panel';
    this.node.onclick = open;
    this.store.changed.connect(this._schedule, this);
    this.refresh();
  }

  private _schedule = coalesced(() => this.refresh());

  dispose(): void {
    this.store.changed.disconnect(this._schedule, this);
    super.dispose();
  }

  refresh(): void {
    const live = this.store.live().length;
    this.node.textContent = `${live} running`;
    this.node.dataset.count = String(live);
  }
}
