import { IJupyterWidgetRegistry } from '@jupyter-widgets/base';
import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { ICodeCellModel } from '@jupyterlab/cells';
import { PathExt } from '@jupyterlab/coreutils';
import {
  INotebookCellExecutor,
  INotebookTracker,
  NotebookActions,
  NotebookPanel
} from '@jupyterlab/notebook';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { IStatusBar } from '@jupyterlab/statusbar';

import { announce, forget } from './announce';
import { CellWatch } from './cells';
import { createExecutor } from './executor';
import { panelIcon, stopIcon } from './icons';
import { OperationsPanel } from './panel';
import { beaconClosed, cancelKernel, clientClosed, clientOpened } from './request';
import { CancelSettings, ICancelSettings, PLUGIN_ID } from './settings';
import { markStops } from './stops';
import { OperationsStore } from './store';
import { RunningStatus, StopAllButton, stopNotebookWork } from './toolbar';
import { ICellStuck, IOperation } from './types';
import { MODULE_NAME, MODULE_VERSION, OperationModel, OperationView } from './widget';

const STOP_CELL = 'jupyter-cancel:stop-cell';
const STOP_NOTEBOOK = 'jupyter-cancel:stop-notebook-work';
const STOP_ALL = 'jupyter-cancel:stop-all-work';
const OPEN_PANEL = 'jupyter-cancel:open-panel';

/** The extension's settings, for the plugins that read them. */
const settingsPlugin: JupyterFrontEndPlugin<CancelSettings> = {
  id: 'jupyter-cancel:settings',
  description: "jupyter_cancel's settings, kept current as the user edits them.",
  autoStart: true,
  provides: ICancelSettings,
  optional: [ISettingRegistry],
  activate: (_app: JupyterFrontEnd, registry: ISettingRegistry | null) => {
    const settings = new CancelSettings();
    if (registry) {
      settings.load(registry);
    }
    return settings;
  }
};

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

/** A cell still running is stopped before it runs again (see executor.ts). */
const executorPlugin: JupyterFrontEndPlugin<INotebookCellExecutor> = {
  id: 'jupyter-cancel:cell-executor',
  description: 'Runs cells; a cell still running is stopped before it runs again.',
  autoStart: true,
  provides: INotebookCellExecutor,
  requires: [ICancelSettings],
  activate: (_app: JupyterFrontEnd, settings: CancelSettings) =>
    createExecutor(() => settings.current)
};

/** The panel, the commands, the toolbar's Stop work, the status bar, the tab-close signal. */
const mainPlugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'Stop button, running-work panel and tab-close signal.',
  autoStart: true,
  requires: [INotebookTracker, ICancelSettings],
  optional: [ICommandPalette, IStatusBar],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    settings: CancelSettings,
    palette: ICommandPalette | null,
    statusBar: IStatusBar | null
  ) => {
    const store = new OperationsStore();
    const cells = new CellWatch(app, tracker);
    const sidebar = new OperationsPanel(
      store,
      op => reveal(app, tracker, op),
      () => cells.running(),
      locator(app, tracker)
    );
    sidebar.title.icon = panelIcon;
    app.shell.add(sidebar, 'left', { rank: 650 });
    addWorkCommands(app, tracker, store, settings, () => app.shell.activateById(sidebar.id));
    palette?.addItem({ command: STOP_NOTEBOOK, category: 'Running Work' });
    palette?.addItem({ command: STOP_ALL, category: 'Running Work' });
    palette?.addItem({ command: OPEN_PANEL, category: 'Running Work' });
    statusBar?.registerStatusItem('jupyter-cancel:running', {
      item: new RunningStatus(store, () => app.shell.activateById(sidebar.id)),
      align: 'left',
      rank: 5
    });
    addStopCell(app, tracker, cells);
    watchNotebooks(tracker, store, settings, cells);
  }
};

/** Show an operation's cell: its notebook activated, the cell scrolled into view. */
function reveal(app: JupyterFrontEnd, tracker: INotebookTracker, op: IOperation): void {
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
}

/** "notebook.ipynb · cell 3" for an operation; a closed tab's rows keep their names. */
function locator(
  app: JupyterFrontEnd,
  tracker: INotebookTracker
): (op: IOperation) => string | null {
  // Where each operation was last seen (bounded).
  const seenAt = new Map<string, string>();
  return (op: IOperation): string | null => {
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
}

/** Commands (Command Palette, shortcuts): stop this notebook's work, stop all work, the panel. */
function addWorkCommands(
  app: JupyterFrontEnd,
  tracker: INotebookTracker,
  store: OperationsStore,
  settings: CancelSettings,
  openPanel: () => void
): void {
  app.commands.addCommand(STOP_NOTEBOOK, {
    label: "Stop This Notebook's Work",
    caption: 'Stop every process, LLM run and build of this notebook (not an interrupt)',
    icon: stopIcon,
    isEnabled: () => !!tracker.currentWidget?.sessionContext.session?.kernel,
    execute: () => stopNotebookWork(tracker.currentWidget, settings)
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
    execute: openPanel
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
}

/** Stop one cell (its Python and its work, or, queued, before it starts), from the cell
 * toolbar or the context menu. */
function addStopCell(app: JupyterFrontEnd, tracker: INotebookTracker, cells: CellWatch): void {
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
        await cells.stop(kernel, cell);
      }
    }
  });
  app.contextMenu.addItem({ command: STOP_CELL, selector: '.jp-CodeCell', rank: 0 });
  const refreshCommand = () => app.commands.notifyCommandChanged(STOP_CELL);
  NotebookActions.executionScheduled.connect(refreshCommand);
  NotebookActions.executed.connect(refreshCommand);
  tracker.activeCellChanged.connect(refreshCommand);
}

interface IConnectionInfo {
  kernelId: string;
  clientId: string;
  path: string;
}

/** Each notebook: its toolbar's Stop work, its kernel told a frontend is here, its stuck
 * cells reported, and its closing (a tab, or the browser's) told to the server. */
function watchNotebooks(
  tracker: INotebookTracker,
  store: OperationsStore,
  settings: CancelSettings,
  cells: CellWatch
): void {
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
    panel.toolbar.insertItem(10, 'jupyterCancelStop', new StopAllButton(panel, store, settings));
    markStops(panel);
    const watch = () => {
      remember(panel);
      watchKernel(panel, cells);
    };
    panel.sessionContext.kernelChanged.connect(watch);
    void panel.sessionContext.ready.then(watch);
    panel.disposed.connect(() => {
      const info = connections.get(panel);
      console.debug('jupyter_cancel: notebook closed', info, settings.current);
      connections.delete(panel);
      if (info && settings.current.cancelOnClose) {
        void clientClosed(info.clientId, info.kernelId).catch(err =>
          console.warn('jupyter_cancel: close not reported', err)
        );
      }
    });
  });
  watchPageClose(tracker, connections, remember, settings);
}

/** Closing the browser tab: a beacon makes it immediate (the server's grace is the fallback). */
function watchPageClose(
  tracker: INotebookTracker,
  connections: Map<NotebookPanel, IConnectionInfo>,
  remember: (panel: NotebookPanel) => void,
  settings: CancelSettings
): void {
  window.addEventListener('pagehide', () => {
    if (!settings.current.cancelOnClose) {
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

/** A notebook's kernel: told a frontend with this extension is here (again after a restart),
 * and its reports of cells stuck after a Stop shown. */
function watchKernel(panel: NotebookPanel, cells: CellWatch): void {
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
      if (stuck) {
        cells.reportStuck(panel, k, stuck);
      }
    }
  });
}

export default [settingsPlugin, widgetPlugin, executorPlugin, mainPlugin];
