import { ICodeCellModel } from '@jupyterlab/cells';
import { INotebookCellExecutor, runCell } from '@jupyterlab/notebook';

import { announce } from './announce';
import { controlRequest } from './request';
import { ISettings } from './tokens';

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
 * Runs cells as JupyterLab does, but a cell that is still running is first stopped:
 * its work is cancelled on the control channel (answered while the cell is busy) and
 * the old execution allowed to end, then the new one is sent. Sent naively, the old
 * run would end in an error and ipykernel's stop_on_error would abort the re-run.
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
        model.executionState === 'running'
      ) {
        try {
          const reply = await controlRequest(kernel, {
            action: 'cancel',
            cell_id: model.id,
            reason: 'cell_rerun'
          });
          if (reply && reply.status === 'ok' && reply.cancelled.length) {
            await executionEnded(model, 5000);
          }
        } catch (err) {
          console.warn('jupyter_cancel: could not stop the running cell first', err);
        }
      }
      return runCell(options);
    }
  });
}
