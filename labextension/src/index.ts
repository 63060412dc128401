import { IJupyterWidgetRegistry } from '@jupyter-widgets/base';
import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, Notification } from '@jupyterlab/apputils';
import { Cell, CodeCell, ICodeCellModel } from '@jupyterlab/cells';
import {
  INotebookCellExecutor,
  INotebookTracker,
  NotebookActions,
  NotebookPanel
} from '@jupyterlab/notebook';
import { PathExt } from '@jupyterlab/coreutils';
import { Kernel, KernelMessage } from '@jupyterlab/services';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { IStatusBar } from '@jupyterlab/statusbar';
import { LabIcon } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';

import { announce, forget } from './announce';
import { createExecutor } from './executor';
import { IRunningCell, OperationsPanel } from './panel';
import {
  beaconClosed,
  cancelKernel,
  clientClosed,
  clientOpened,
  controlRequest,
  stopCell
} from './request';
import { OperationsStore, coalesced } from './store';
import { ICancelRequest, ICellStuck, IControlRequest, IOperation, ISettings } from './tokens';
import { MODULE_NAME, MODULE_VERSION, OperationModel, OperationView } from './widget';

const PLUGIN_ID = 'jupyter-cancel:plugin';
const STOP_CELL = 'jupyter-cancel:stop-cell';
/** A queued cell stopped before it ran (the kernel will skip its request). */
const SKIPPED_CLASS = 'jc-cell-skipped';
const STOP_NOTEBOOK = 'jupyter-cancel:stop-notebook-work';
const STOP_ALL = 'jupyter-cancel:stop-all-work';
const OPEN_PANEL = 'jupyter-cancel:open-panel';
const DEFAULTS: ISettings = {
  stopButtonScope: 'kernel',
  cancelOnClose: true,
  stopBeforeRerun: true
};
let current: ISettings = { ...DEFAULTS };

/** Stop: a filled square, the media-player sign every user reads as "stop". */
const stopIcon = new LabIcon({
  name: 'jupyter-cancel:stop',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" width="16"><rect class="jp-icon3" fill="#616161" x="5" y="5" width="14" height="14" rx="2"/></svg>'
});

/** The Running work panel's tab: a list of work with a stop square, unlike the round icons beside it. */
const panelIcon = new LabIcon({
  name: 'jupyter-cancel:running-work',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" width="16"><g class="jp-icon3" fill="#616161"><rect x="2" y="4" width="12" height="2.4" rx="1"/><rect x="2" y="10.8" width="12" height="2.4" rx="1"/><rect x="2" y="17.6" width="12" height="2.4" rx="1"/><rect x="16" y="9" width="6.5" height="6.5" rx="1"/></g></svg>'
});

/** The widget's view, for jc.run / jc.start / jc.progress / !cmd displays. */
const widgetPlugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-cancel:widget',
  description:
    'The operation widget: progress, live output and a stop button that works while the cell is busy.',
  autoStart: true,
  requires: [IJupyterWidgetRegistry],
  activate: (_app: JupyterFrontEnd, registry: IJupyterWidgetRegistry) => {
    registry.registerWidget({
      name: MODULE_NAME,
      version: MODULE_VERSION,
      exports: { OperationModel, OperationView }
    });
  }
};

/** Re-running a busy cell stops its work first (replaces the default cell executor). */
const executorPlugin: JupyterFrontEndPlugin<INotebookCellExecutor> = {
  id: 'jupyter-cancel:cell-executor',
  description: 'Runs cells; a cell still running is stopped before it runs again.',
  autoStart: true,
  provides: INotebookCellExecutor,
  activate: () => createExecutor(() => current)
};

interface IConnectionInfo {
  kernelId: string;
  clientId: string;
  path: string;
}

/** A toolbar button "stop all work of this notebook" with a count badge. */
class StopAllButton extends Widget {
  private _badge: HTMLElement;

  constructor(
    private panel: NotebookPanel,
    private store: OperationsStore
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
    button.onclick = () => void this.stopAll();
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
    if (kernel && current.stopButtonScope === 'session') {
      live = live.filter(op => op.client_session === kernel.clientId);
    }
    this._badge.textContent = live.length ? String(live.length) : '';
    this.node.dataset.count = String(live.length);
  }

  async stopAll(): Promise<void> {
    await stopNotebookWork(this.panel);
  }
}

/** Stop all work of a notebook's kernel (or only this page's, with the setting `session`). */
async function stopNotebookWork(panel: NotebookPanel | null): Promise<void> {
  const kernel = panel?.sessionContext.session?.kernel;
  if (!kernel) {
    return;
  }
  const body: ICancelRequest = { reason: 'user' };
  if (current.stopButtonScope === 'session') {
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
class RunningStatus extends Widget {
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

/** A stopped cell still runs after its bound: say so, and offer the kernel interrupt. */
function reportStuck(
  panel: NotebookPanel,
  kernel: Kernel.IKernelConnection,
  stuck: ICellStuck
): void {
  const index = panel.content.widgets.findIndex(c => c.model.id === stuck.cell_id);
  if (index < 0) {
    return; // another notebook on the same kernel shows it
  }
  const where = stuck.in_native_code ? 'in native code' : 'it caught the stop';
  Notification.warning(
    `${panel.title.label}, cell ${index + 1}: still running ${stuck.seconds}s after Stop (${where}).`,
    {
      autoClose: false,
      actions: [
        {
          label: 'Interrupt kernel',
          caption: 'Interrupt the kernel: stops all of its work',
          callback: () => void kernel.interrupt()
        }
      ]
    }
  );
}

/** Cells reported stuck after a Stop, until they end. */
const stuckCells = new Set<string>();

const mainPlugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'Stop button, running-work panel and tab-close signal.',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [ISettingRegistry, ICommandPalette, IStatusBar],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    settingRegistry: ISettingRegistry | null,
    palette: ICommandPalette | null,
    statusBar: IStatusBar | null
  ) => {
    if (settingRegistry) {
      void settingRegistry
        .load(PLUGIN_ID)
        .then(settings => {
          const apply = () => {
            current = { ...DEFAULTS, ...(settings.composite as unknown as ISettings) };
          };
          apply();
          settings.changed.connect(apply);
        })
        .catch(err => console.warn('jupyter_cancel: settings not loaded', err));
    }
    const store = new OperationsStore();
    const reveal = (op: IOperation) => {
      const panel = tracker.find(p => p.sessionContext.session?.kernel?.id === op.kernel_id);
      if (!panel) {
        return;
      }
      app.shell.activateById(panel.id);
      const cells = panel.content.widgets;
      const index = cells.findIndex(c => c.model.id === op.cell_id);
      if (index >= 0) {
        panel.content.activeCellIndex = index;
        void panel.content.scrollToCell(cells[index]);
      }
    };
    // The execute request each kernel is running now (its iopub busy/idle): Lab marks every
    // cell it sent as running, also those queued behind it.
    const executing = new Map<string, string>();
    tracker.widgetAdded.connect((_, panel) => {
      panel.sessionContext.iopubMessage.connect((context, msg) => {
        const kernelId = context.session?.kernel?.id;
        const parent = msg.parent_header as Partial<KernelMessage.IHeader>;
        if (
          !kernelId ||
          msg.header.msg_type !== 'status' ||
          parent.msg_type !== 'execute_request'
        ) {
          return;
        }
        const state = (msg.content as KernelMessage.IStatusMsg['content']).execution_state;
        if (state === 'busy' && parent.msg_id) {
          executing.set(kernelId, parent.msg_id);
        } else if (state === 'idle' && executing.get(kernelId) === parent.msg_id) {
          executing.delete(kernelId);
        }
      });
    });
    const queued = (kernel: Kernel.IKernelConnection, cell: unknown): boolean => {
      const now = executing.get(kernel.id);
      const sent = cell instanceof CodeCell ? cell.outputArea.future?.msg.header.msg_id : undefined;
      return now !== undefined && sent !== undefined && sent !== now;
    };
    // Stop one cell from the toolbar, the context menu or the panel: running, its Python and
    // its work; queued behind another (Run All), its request is skipped when the kernel reaches it.
    const stopCellWidget = async (kernel: Kernel.IKernelConnection, cell: Cell): Promise<void> => {
      const msgId =
        cell instanceof CodeCell ? cell.outputArea.future?.msg.header.msg_id : undefined;
      const reply = await stopCell(kernel, cell.model.id, 'user', msgId);
      if (reply?.skipped) {
        // Queued and stopped: dimmed until the kernel has passed it by.
        cell.addClass(SKIPPED_CLASS);
        const model = cell.model as ICodeCellModel;
        const passed = () => {
          if (model.executionState !== 'running') {
            cell.removeClass(SKIPPED_CLASS);
            model.stateChanged.disconnect(passed);
          }
        };
        model.stateChanged.connect(passed);
      }
    };
    const runningCells = (): IRunningCell[] => {
      for (const id of [...stuckCells]) {
        const found = tracker.find(p => p.content.widgets.some(c => c.model.id === id));
        const model = found?.content.widgets.find(c => c.model.id === id)?.model as ICodeCellModel;
        if (!model || model.executionState !== 'running') {
          stuckCells.delete(id); // it ended after all
        }
      }
      const cells: IRunningCell[] = [];
      tracker.forEach(panel => {
        const kernel = panel.sessionContext.session?.kernel;
        panel.content.widgets.forEach((cell, index) => {
          const model = cell.model as ICodeCellModel;
          if (kernel && model.type === 'code' && model.executionState === 'running') {
            cells.push({
              id: model.id,
              label: `cell ${index + 1} · ${panel.title.label}`, // the cell first: a narrow panel cuts the end
              stuck: stuckCells.has(model.id),
              queued: queued(kernel, cell),
              skipped: cell.hasClass(SKIPPED_CLASS),
              stop: () => stopCellWidget(kernel, cell),
              interrupt: () => kernel.interrupt(),
              reveal: () => {
                app.shell.activateById(panel.id);
                panel.content.activeCellIndex = index;
                void panel.content.scrollToCell(cell);
              }
            });
          }
        });
      });
      return cells;
    };
    // Where each operation was last seen, so a closed tab's rows keep their names (bounded).
    const seenAt = new Map<string, string>();
    const locate = (op: IOperation): string | null => {
      const panel = tracker.find(p => p.sessionContext.session?.kernel?.id === op.kernel_id);
      if (!panel) {
        const seen = seenAt.get(op.id);
        if (seen) {
          return `${seen} (closed)`;
        }
        // The kernel's session still names its notebook while no tab shows it.
        for (const session of app.serviceManager.sessions.running()) {
          if (session.kernel?.id === op.kernel_id) {
            return `${PathExt.basename(session.path)} (closed)`;
          }
        }
        return null;
      }
      const index = panel.content.widgets.findIndex(c => c.model.id === op.cell_id);
      const label = index >= 0 ? `${panel.title.label} · cell ${index + 1}` : panel.title.label;
      if (!seenAt.has(op.id) && seenAt.size >= 5000) {
        seenAt.delete(seenAt.keys().next().value as string);
      }
      seenAt.set(op.id, label);
      return label;
    };
    const sidebar = new OperationsPanel(store, reveal, runningCells, locate);
    sidebar.title.icon = panelIcon;
    app.shell.add(sidebar, 'left', { rank: 650 });

    // Commands (Command Palette, shortcuts): stop this notebook's work, stop all work, the panel.
    app.commands.addCommand(STOP_NOTEBOOK, {
      label: "Stop This Notebook's Work",
      caption: 'Stop every process, LLM run and build of this notebook (not an interrupt)',
      icon: stopIcon,
      isEnabled: () => !!tracker.currentWidget?.sessionContext.session?.kernel,
      execute: () => stopNotebookWork(tracker.currentWidget)
    });
    app.commands.addCommand(STOP_ALL, {
      label: 'Stop All Work (Every Kernel)',
      caption: 'Stop the running work of every kernel',
      icon: stopIcon,
      execute: async () => {
        const kernels = new Set(
          store
            .live()
            .map(op => op.kernel_id)
            .filter(Boolean) as string[]
        );
        await Promise.all([...kernels].map(id => cancelKernel(id, { reason: 'user' })));
      }
    });
    app.commands.addCommand(OPEN_PANEL, {
      label: 'Show Running Work',
      caption: 'Open the Running work panel',
      execute: () => app.shell.activateById(sidebar.id)
    });
    app.commands.addKeyBinding({
      command: STOP_NOTEBOOK,
      keys: ['Accel Alt .'],
      selector: '.jp-Notebook'
    });
    app.commands.addKeyBinding({
      command: STOP_ALL,
      keys: ['Accel Alt Shift .'],
      selector: 'body'
    });
    for (const command of [STOP_NOTEBOOK, STOP_ALL, OPEN_PANEL]) {
      palette?.addItem({ command, category: 'Running Work' });
    }
    if (statusBar) {
      statusBar.registerStatusItem('jupyter-cancel:running', {
        item: new RunningStatus(store, () => app.shell.activateById(sidebar.id)),
        align: 'left',
        rank: 5
      });
    }

    // Stop one cell (its Python and its work), from the cell toolbar or the context menu.
    app.commands.addCommand(STOP_CELL, {
      label: 'Stop this cell',
      caption:
        'Stop this cell: its Python and its work if it runs, or, queued, before it starts; other cells keep theirs',
      icon: stopIcon,
      // Code cells only: a greyed stop on a markdown cell read as "remove".
      isVisible: () => tracker.activeCell?.model.type === 'code',
      isEnabled: () => {
        const model = tracker.activeCell?.model as ICodeCellModel | undefined;
        return model?.type === 'code' && model.executionState === 'running';
      },
      execute: async () => {
        const kernel = tracker.currentWidget?.sessionContext.session?.kernel;
        const cell = tracker.activeCell;
        if (kernel && cell) {
          await stopCellWidget(kernel, cell);
        }
      }
    });
    app.contextMenu.addItem({ command: STOP_CELL, selector: '.jp-CodeCell', rank: 0 });
    const refreshCommand = () => app.commands.notifyCommandChanged(STOP_CELL);
    NotebookActions.executionScheduled.connect(refreshCommand);
    NotebookActions.executed.connect(refreshCommand);
    tracker.activeCellChanged.connect(refreshCommand);

    const connections = new Map<NotebookPanel, IConnectionInfo>();
    const remember = (panel: NotebookPanel) => {
      const kernel = panel.sessionContext.session?.kernel;
      if (kernel) {
        const known = connections.get(panel);
        const info = { kernelId: kernel.id, clientId: kernel.clientId, path: panel.context.path };
        connections.set(panel, info);
        if (!known || known.clientId !== info.clientId) {
          // A reloaded page takes over the work of the page it replaces (the server matches
          // them by kernel and notebook path, within its reload_grace).
          void clientOpened(info.clientId, info.kernelId, info.path).catch(err =>
            console.debug('jupyter_cancel: open not reported', err)
          );
        }
      }
    };

    tracker.widgetAdded.connect((_, panel) => {
      panel.toolbar.insertItem(10, 'jupyterCancelStop', new StopAllButton(panel, store));
      const watch = () => {
        remember(panel);
        const kernel = panel.sessionContext.session?.kernel;
        kernel?.statusChanged.connect((k, status) => {
          if (status === 'restarting' || status === 'autorestarting') {
            forget(k);
          } else if (status === 'idle') {
            announce(k);
          }
        });
        announce(kernel);
        kernel?.iopubMessage.connect((k, msg) => {
          if ((msg.header.msg_type as string) === 'jupyter_cancel_event') {
            announce(k); // the extension was loaded after we connected
            const stuck = (msg.content as { cell_stuck?: ICellStuck }).cell_stuck;
            if (stuck && !stuckCells.has(stuck.cell_id)) {
              stuckCells.add(stuck.cell_id);
              reportStuck(panel, k, stuck);
            }
          }
        });
      };
      panel.sessionContext.kernelChanged.connect(watch);
      void panel.sessionContext.ready.then(watch);
      panel.disposed.connect(() => {
        const info = connections.get(panel);
        console.debug('jupyter_cancel: notebook closed', info, current);
        connections.delete(panel);
        if (info && current.cancelOnClose) {
          void clientClosed(info.clientId, info.kernelId).catch(err =>
            console.warn('jupyter_cancel: close not reported', err)
          );
        }
      });
    });

    // Closing the browser tab: a beacon makes it immediate (the server's grace is the fallback).
    window.addEventListener('pagehide', () => {
      if (!current.cancelOnClose) {
        return;
      }
      for (const panel of tracker.filter(() => true)) {
        remember(panel);
      }
      for (const info of connections.values()) {
        beaconClosed(info.clientId, info.kernelId, info.path);
      }
    });
  }
};

export default [widgetPlugin, executorPlugin, mainPlugin];
