import { CodeCell } from '@jupyterlab/cells';
import { NotebookPanel } from '@jupyterlab/notebook';

/** A cell output that is a stop the user asked for (a ``jc.Cancelled``: "Stopped: … — by
 * you"): shown as a notice, not in the error box a failure gets. */
export const STOP_OUTPUT_CLASS = 'jc-stop-output';

/** Marks the stop outputs of a notebook's code cells, now and as outputs come (a saved
 * notebook's too). A stock interrupt's ``KeyboardInterrupt`` stays an error. */
export function markStops(panel: NotebookPanel): void {
  const watched = new WeakSet<CodeCell>();
  const watch = () => {
    for (const cell of panel.content.widgets) {
      if (cell instanceof CodeCell && !watched.has(cell)) {
        watched.add(cell);
        const mark = () => markCell(cell);
        cell.outputArea.model.changed.connect(mark);
        mark();
      }
    }
  };
  void panel.revealed.then(() => {
    panel.content.model?.cells.changed.connect(watch);
    watch();
  });
}

function markCell(cell: CodeCell): void {
  const area = cell.outputArea;
  for (let i = 0; i < area.model.length; i++) {
    const output = area.model.get(i).toJSON();
    const stop = output.output_type === 'error' && output.ename === 'Cancelled';
    area.widgets[i]?.toggleClass(STOP_OUTPUT_CLASS, stop);
  }
}
