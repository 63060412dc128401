import { ICodeCellModel } from '@jupyterlab/cells';
import { INotebookCellExecutor, runCell } from '@jupyterlab/notebook';

import { announce } from './announce';
import { hasExtension, stopCell } from './request';
import { ISettings } from './types';

/** How long a re-run waits for the stopped run to end (a cell stuck in C code may not). */
const STOP_WAIT = 10000;

/** Resolve once the cell's execution state is idle (or after `timeout` ms). */
function executionEnded(model: ICodeCellModel, timeout: number): Promise<boolean> {
  if (model.executionState !== 'running') {
    return Promise.resolve(true);
  }
  return new Promise(resolve => {
    const done = (ok: boolean) => {
      clearTimeout(timer);
      model.stateChanged.disconnect(onChange);
      resolve(ok);
    };
    const onChange = (_: unknown, args: { name: string; newValue: unknown }) => {
      if (args.name === 'executionState' && args.newValue !== 'running') {
        done(true);
      }
    };
    const timer = setTimeout(() => done(false), timeout);
    model.stateChanged.connect(onChange);
  });
}

/**
 * Runs cells as JupyterLab does, but a cell that is still running is first stopped on the
 * control channel (answered while the cell is busy): its work is cancelled and its Python
 * gets jc.Cancelled. The old execution is allowed to end, then the new one is sent. Sent
 * naively, the new run would queue behind the old one, and once the old one ended in an
 * error ipykernel's stop_on_error would abort it.
 */
export function createExecutor(settings: () => ISettings): INotebookCellExecutor {
  return Object.freeze({
    async runCell(options: INotebookCellExecutor.IRunCellOptions): Promise<boolean> {
      const { cell, sessionContext } = options;
      const kernel = sessionContext?.session?.kernel;
      const model = cell.model as ICodeCellModel;
      announce(kernel); // before the execute_request, on the same channel: seen first
      if (
        settings().stopBeforeRerun &&
        kernel &&
        model.type === 'code' &&
        model.executionState === 'running' &&
        (await hasExtension(kernel)) // other kernels queue the re-run, as stock Jupyter does
      ) {
        try {
          const reply = await stopCell(kernel, model.id, 'cell_rerun');
          if (reply && reply.status === 'ok' && (reply.running || reply.cancelled.length)) {
            await executionEnded(model, STOP_WAIT);
            // Let the old run's promise chain settle first: its error handler (runCells'
            // KernelReplyNotOK catch) marks every cell with no execution count idle, and
            // would otherwise hit the new run, leaving it shown as `[ ]` while it runs.
            await new Promise(resolve => setTimeout(resolve, 0));
          }
        } catch (err) {
          console.warn('jupyter_cancel: could not stop the running cell first', err);
        }
      }
      return runCell(options);
    }
  });
}
