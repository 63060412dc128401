import { JupyterFrontEnd } from '@jupyterlab/application';
import { ISessionContext, Notification } from '@jupyterlab/apputils';
import { Cell, CodeCell, ICodeCellModel } from '@jupyterlab/cells';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { Kernel, KernelMessage } from '@jupyterlab/services';

import { IRunningCell } from './cellrows';
import { stopCell } from './request';
import { ICellStuck } from './types';

/** A queued cell stopped before it ran: dimmed until the kernel has passed it by. */
export const SKIPPED_CLASS = 'jc-cell-skipped';

/**
 * The cells of open notebooks that run or wait: Lab marks every cell it sent as running
 * ([*]); the execute request each kernel runs now (its iopub busy/idle) tells the running one
 * from those queued behind it. Stops one cell, running or queued, and remembers the cells a
 * kernel reported stuck after a Stop until they end.
 */
export class CellWatch {
  /** Kernel id → the execute request it runs now. */
  private _executing = new Map<string, string>();
  /** Cells reported stuck after a Stop, until they end. */
  private _stuck = new Set<string>();

  constructor(
    private app: JupyterFrontEnd,
    private tracker: INotebookTracker
  ) {
    tracker.widgetAdded.connect((_, panel) => {
      panel.sessionContext.iopubMessage.connect(this._onIopub, this);
    });
  }

  private _onIopub(context: ISessionContext, msg: KernelMessage.IMessage): void {
    const kernelId = context.session?.kernel?.id;
    const parent = msg.parent_header as Partial<KernelMessage.IHeader>;
    if (!kernelId || msg.header.msg_type !== 'status' || parent.msg_type !== 'execute_request') {
      return;
    }
    const state = (msg.content as KernelMessage.IStatusMsg['content']).execution_state;
    if (state === 'busy' && parent.msg_id) {
      this._executing.set(kernelId, parent.msg_id);
    } else if (state === 'idle' && this._executing.get(kernelId) === parent.msg_id) {
      this._executing.delete(kernelId);
    }
  }

  /** Sent to the kernel and waiting behind the cell it runs now. */
  queued(kernel: Kernel.IKernelConnection, cell: Cell): boolean {
    const now = this._executing.get(kernel.id);
    const sent = requestOf(cell);
    return now !== undefined && sent !== undefined && sent !== now;
  }

  /** Stop one cell: running, its Python and its work; queued behind another (Run All), its
   * request is skipped when the kernel reaches it. */
  async stop(kernel: Kernel.IKernelConnection, cell: Cell): Promise<void> {
    const reply = await stopCell(kernel, cell.model.id, 'user', requestOf(cell));
    if (reply?.skipped) {
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
  }

  /** The running and queued cells of every open notebook, for the panel. */
  running(): IRunningCell[] {
    this._forgetEnded();
    const cells: IRunningCell[] = [];
    this.tracker.forEach(panel => {
      const kernel = panel.sessionContext.session?.kernel;
      panel.content.widgets.forEach((cell, index) => {
        const model = cell.model as ICodeCellModel;
        if (kernel && model.type === 'code' && model.executionState === 'running') {
          cells.push(this._row(panel, kernel, cell, index));
        }
      });
    });
    return cells;
  }

  private _row(
    panel: NotebookPanel,
    kernel: Kernel.IKernelConnection,
    cell: Cell,
    index: number
  ): IRunningCell {
    return {
      id: cell.model.id,
      label: `cell ${index + 1} · ${panel.title.label}`, // the cell first: a narrow panel cuts the end
      stuck: this._stuck.has(cell.model.id),
      queued: this.queued(kernel, cell),
      skipped: cell.hasClass(SKIPPED_CLASS),
      stop: () => this.stop(kernel, cell),
      interrupt: () => kernel.interrupt(),
      reveal: () => {
        this.app.shell.activateById(panel.id);
        panel.content.activeCellIndex = index;
        void panel.content.scrollToCell(cell);
      }
    };
  }

  private _forgetEnded(): void {
    for (const id of [...this._stuck]) {
      const found = this.tracker.find(p => p.content.widgets.some(c => c.model.id === id));
      const model = found?.content.widgets.find(c => c.model.id === id)?.model as ICodeCellModel;
      if (!model || model.executionState !== 'running') {
        this._stuck.delete(id); // it ended after all
      }
    }
  }

  /** A stopped cell still runs after its bound: say so (once), and offer the kernel interrupt. */
  reportStuck(panel: NotebookPanel, kernel: Kernel.IKernelConnection, stuck: ICellStuck): void {
    if (this._stuck.has(stuck.cell_id)) {
      return;
    }
    this._stuck.add(stuck.cell_id);
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
}

/** The id of the execute request a code cell was last sent with, if any. */
function requestOf(cell: Cell): string | undefined {
  return cell instanceof CodeCell ? cell.outputArea.future?.msg.header.msg_id : undefined;
}
