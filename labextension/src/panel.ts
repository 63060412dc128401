import { Widget } from '@lumino/widgets';

import { cancelOperation, liveResources, operationOutput } from './request';
import { IRunningCell, cellRow } from './cellrows';
import { OperationsStore, coalesced } from './store';
import { IOperation, describeReason, formatElapsed } from './types';

/** Live resources are sampled every this many ticks (seconds) while the panel shows. */
const SAMPLE_TICKS = 2;

/** Which operations the panel lists. */
export type PanelFilter = 'all' | 'running' | 'ended';

/** One operation's row, kept across updates (only what changed is touched). */
interface IRow {
  row: HTMLLIElement;
  name: HTMLElement;
  meta: HTMLElement;
  /** The output tail, shown when the row is expanded. */
  tail: HTMLPreElement;
  stop: HTMLButtonElement | null;
  op: IOperation;
  sig: string;
}

/**
 * The sidebar: running cells, then the operations of all kernels — newest first, named by
 * notebook and cell number, filtered (all / running / ended), ended ones clearable, a Stop per
 * live row. Rows are keyed by operation id and updated in place: an event touches its row,
 * the clock only the elapsed times.
 */
export class OperationsPanel extends Widget {
  private _timer: number;
  private _rows = new Map<string, IRow>();
  /** One header per notebook (or kernel) the listed work belongs to. */
  private _headers = new Map<string, HTMLLIElement>();
  private _cellsKey = '';
  private _filter: PanelFilter = 'all';
  private _count: HTMLElement;
  private _cells: HTMLUListElement;
  private _list: HTMLUListElement;
  private _empty: HTMLElement;
  private _schedule = coalesced(() => this.render());
  private _where = new Map<string, string | null>();
  private _ticks = 0;
  private _sampling = false;

  constructor(
    private store: OperationsStore,
    private reveal: (op: IOperation) => void,
    private runningCells: () => IRunningCell[] = () => [],
    /** "notebook.ipynb · cell 3" for an operation whose notebook is open, else null. */
    private locate: (op: IOperation) => string | null = () => null
  ) {
    super();
    this.id = 'jupyter-cancel-panel';
    this.addClass('jc-panel');
    this.title.caption = 'Running work (jupyter_cancel)';
    this.node.innerHTML = `
      <div class="jc-panel-head">
        <span>Running work</span> <span class="jc-panel-count" aria-live="polite"></span>
        <span class="jc-panel-tools">
          <select class="jc-panel-filter jp-mod-styled" aria-label="Show">
            <option value="all">All</option><option value="running">Running</option><option value="ended">Ended</option>
          </select>
          <button class="jc-panel-clear jp-mod-styled" title="Remove ended work from this list" aria-label="Clear ended work">Clear ended</button>
        </span>
      </div>
      <ul class="jc-list jc-cells" aria-label="Running cells"></ul>
      <ul class="jc-list jc-ops" aria-label="Operations"></ul>
      <div class="jc-empty">Nothing has run yet. Work started with jc.run, jc.start, jc.progress or !cmd shows here.</div>`;
    this._count = this.node.querySelector('.jc-panel-count')!;
    this._cells = this.node.querySelector('.jc-cells')!;
    this._list = this.node.querySelector('.jc-ops')!;
    this._empty = this.node.querySelector('.jc-empty')!;
    const filter = this.node.querySelector<HTMLSelectElement>('.jc-panel-filter')!;
    filter.onchange = () => {
      this._filter = filter.value as PanelFilter;
      this.render();
    };
    this.node.querySelector<HTMLButtonElement>('.jc-panel-clear')!.onclick = () =>
      this.store.clearEnded();
    this.store.changed.connect(this._schedule, this);
    // Each second only the elapsed times change in place: replacing the rows would lose a
    // click whose mouse-down and mouse-up fall either side of the re-render.
    this._timer = window.setInterval(() => this.tick(), 1000);
    this.render();
  }

  dispose(): void {
    window.clearInterval(this._timer);
    this.store.changed.disconnect(this._schedule, this);
    super.dispose();
  }

  tick(): void {
    this._where.clear();
    this.renderCells();
    const now = Date.now() / 1000;
    for (const { meta, op } of this._rows.values()) {
      setText(meta, this.metaText(op, now));
    }
    if (++this._ticks % SAMPLE_TICKS === 0) {
      this.sampleResources();
    }
  }

  /** Live CPU, memory and process count of the running trees, asked of their kernels only
   * while the panel is on screen (nothing is sampled while nobody looks). */
  private sampleResources(): void {
    const running = this.store.live().some(op => op.kind === 'process');
    if (this._sampling || !running || !this.isVisible) {
      return;
    }
    this._sampling = true;
    void liveResources()
      .then(sampled => {
        const now = Date.now() / 1000;
        for (const op of this.store.mergeResources(sampled)) {
          const entry = this._rows.get(op.id);
          if (entry) {
            setText(entry.meta, this.metaText(entry.op, now));
          }
        }
      })
      .catch(() => undefined) // a server restarting: the next tick asks again
      .finally(() => {
        this._sampling = false;
      });
  }

  private shown(op: IOperation): boolean {
    const live = op.state === 'running' || op.state === 'pending';
    return this._filter === 'all' || (this._filter === 'running') === live;
  }

  render(): void {
    this._where.clear(); // where each operation is: looked up once per render
    this.renderCells();
    const now = Date.now() / 1000;
    const groups = this.grouped(this.store.operations().filter(op => this.shown(op)));
    let previous: HTMLElement | null = null;
    const place = (element: HTMLElement) => {
      // Keep the order moving only elements that are out of place.
      const expected: Element | null = previous
        ? previous.nextElementSibling
        : this._list.firstElementChild;
      if (expected !== element) {
        this._list.insertBefore(element, expected);
      }
      previous = element;
    };
    for (const [label, members] of groups) {
      place(this.header(label, members));
      for (const op of members) {
        place(this.updatedRow(op, now));
      }
    }
    const live = this.store.live().length;
    this._count.textContent = `${live} running`;
    this.showEmpty();
  }

  /** ``ops`` grouped by notebook (the kernel's, where no open notebook shows it); the rows
   * and group headers of what is no longer listed removed. */
  private grouped(ops: IOperation[]): Map<string, IOperation[]> {
    const wanted = new Set(ops.map(op => op.id));
    for (const [id, entry] of this._rows) {
      if (!wanted.has(id)) {
        entry.row.remove();
        this._rows.delete(id);
      }
    }
    const groups = new Map<string, IOperation[]>();
    for (const op of ops) {
      const label = this.group(op);
      groups.set(label, [...(groups.get(label) ?? []), op]);
    }
    for (const [label, header] of this._headers) {
      if (!groups.has(label)) {
        header.remove();
        this._headers.delete(label);
      }
    }
    return groups;
  }

  private header(label: string, members: IOperation[]): HTMLElement {
    let header = this._headers.get(label);
    if (!header) {
      header = document.createElement('li');
      header.className = 'jc-group';
      this._headers.set(label, header);
    }
    const running = members.filter(op => op.state === 'running' || op.state === 'pending').length;
    setText(header, `${label} — ${running} running, ${members.length - running} ended`);
    return header;
  }

  /** The operation's row, made or brought up to date (only what changed is touched). */
  private updatedRow(op: IOperation, now: number): HTMLElement {
    let entry = this._rows.get(op.id);
    const sig = `${op.state}:${op.reason}:${op.name}:${op.cell_id}:${op.client_session}:${(op.tags?.workers ?? []).join(',')}`;
    if (!entry) {
      entry = this.makeRow(op);
      this._rows.set(op.id, entry);
    } else if (entry.sig !== sig) {
      this.fillRow(entry, op);
    }
    entry.op = op;
    entry.sig = sig;
    setText(entry.meta, this.metaText(op, now));
    return entry.row;
  }

  /** The "nothing has run" line, while neither a cell nor an operation is listed. */
  private showEmpty(): void {
    this._empty.style.display =
      this.store.operations().length || this._cells.childElementCount ? 'none' : '';
  }

  private renderCells(): void {
    const cells = this.runningCells();
    const key = JSON.stringify(
      cells.map(cell => [cell.id, cell.label, cell.stuck, cell.queued, cell.skipped])
    );
    if (key === this._cellsKey) {
      return;
    }
    this._cellsKey = key;
    this._cells.textContent = '';
    this.renderCellRows(cells);
    this.showEmpty();
  }

  private renderCellRows(cells: IRunningCell[]): void {
    for (const cell of cells) {
      this._cells.appendChild(cellRow(cell));
    }
  }

  private makeRow(op: IOperation): IRow {
    const row = document.createElement('li');
    row.tabIndex = 0;
    const head = document.createElement('div');
    head.className = 'jc-row-head';
    const name = document.createElement('span');
    name.className = 'jc-row-name';
    head.appendChild(name);
    const expand = document.createElement('button');
    expand.className = 'jc-row-expand';
    expand.textContent = '▸';
    expand.title = 'Show its latest output';
    expand.setAttribute('aria-label', 'Show its latest output');
    expand.setAttribute('aria-expanded', 'false');
    head.insertBefore(expand, name);
    const meta = document.createElement('div');
    meta.className = 'jc-row-meta';
    const tail = document.createElement('pre');
    tail.className = 'jc-row-tail';
    tail.style.display = 'none';
    row.appendChild(head);
    row.appendChild(meta);
    row.appendChild(tail);
    const entry: IRow = { row, name, meta, tail, stop: null, op, sig: '' };
    expand.onclick = event => {
      event.stopPropagation();
      toggleTail(entry, expand);
    };
    row.onclick = () => this.reveal(entry.op);
    row.onkeydown = event => {
      if (event.key === 'Enter') {
        this.reveal(entry.op);
      }
    };
    this.fillRow(entry, op);
    return entry;
  }

  private fillRow(entry: IRow, op: IOperation): void {
    const where = this.where(op);
    entry.row.className = `jc-row jc-state-${op.state}`;
    entry.row.dataset.id = op.id;
    entry.row.title = `${op.name}\n${where ?? `cell ${op.cell_id ?? '-'}`} · kernel ${op.kernel_id ?? '-'}\nclick to show its cell`;
    entry.row.setAttribute('aria-label', `${op.name}, ${op.state}`);
    entry.name.textContent = op.name;
    entry.name.title = op.name;
    const live = op.state === 'running' || op.state === 'pending';
    if (live && !entry.stop) {
      const stop = document.createElement('button');
      stop.className = 'jc-row-stop jp-mod-styled jp-mod-warn';
      stop.textContent = '■ Stop';
      stop.title = `Stop ${op.name}`;
      stop.setAttribute('aria-label', stop.title);
      stop.onclick = event => {
        event.stopPropagation();
        stop.disabled = true;
        void cancelOperation(entry.op.id).catch(err => {
          console.error('jupyter_cancel: stop failed', err);
          stop.disabled = false;
        });
      };
      entry.name.parentElement!.appendChild(stop);
      entry.stop = stop;
    } else if (!live && entry.stop) {
      entry.stop.remove();
      entry.stop = null;
    }
  }

  private where(op: IOperation): string | null {
    let found = this._where.get(op.id);
    if (found === undefined) {
      found = this.locate(op);
      this._where.set(op.id, found);
    }
    return found;
  }

  private metaText(op: IOperation, now: number): string {
    return metaText(op, now, this.where(op));
  }

  /** The group of a row: its notebook's name, else its kernel. */
  private group(op: IOperation): string {
    const where = this.where(op);
    if (where) {
      return where.split(' · cell ')[0];
    }
    return op.kernel_id ? `kernel ${op.kernel_id.slice(0, 8)}` : 'no kernel';
  }
}

/** Write a text only when it changed: an unchanged write still costs the page a layout. */
/** A row's output tail shown (its operation's newest output, asked of its kernel) or hidden. */
function toggleTail(entry: IRow, expand: HTMLButtonElement): void {
  const tail = entry.tail;
  const open = tail.style.display === 'none';
  expand.textContent = open ? '▾' : '▸';
  expand.setAttribute('aria-expanded', String(open));
  tail.style.display = open ? '' : 'none';
  if (open) {
    tail.textContent = '…';
    void operationOutput(entry.op.id)
      .then(text => {
        tail.textContent = text || '(no output)';
        tail.scrollTop = tail.scrollHeight;
      })
      .catch(() => {
        tail.textContent = '(its kernel did not say)';
      });
  }
}

function setText(node: HTMLElement, text: string): void {
  if (node.textContent !== text) {
    node.textContent = text;
  }
}

/** A row's second line: state, reason (and cancel latency), elapsed time, where it runs —
 * the notebook and cell number when that notebook is open, else cell and kernel ids — and
 * the cluster's workers, for work submitted to Dask. */
function metaText(op: IOperation, now: number, where: string | null = null): string {
  const reason = op.reason ? ` — ${describeReason(op.reason)}` : '';
  const latency =
    op.state === 'cancelled' && typeof op.cancel_latency === 'number'
      ? ` in ${Math.round(op.cancel_latency * 1000)} ms`
      : '';
  const workers = op.kind === 'dask' ? (op.tags?.workers ?? []) : [];
  const place = op.foreign
    ? `kernel-level · kernel ${op.kernel_id ? op.kernel_id.slice(0, 8) : '-'}`
    : (where ??
      `cell ${op.cell_id ? op.cell_id.slice(0, 8) : '-'} · kernel ${op.kernel_id ? op.kernel_id.slice(0, 8) : '-'}`);
  const used = op.resources;
  const live = op.state === 'running' || op.state === 'pending';
  const cost =
    op.ended && used?.peak_rss
      ? ` · peak ${(used.peak_rss / 2 ** 20).toFixed(1)} MiB, ${(used.cpu_seconds ?? 0).toFixed(1)} CPU s`
      : live && used?.processes
        ? ` · CPU ${Math.round(used.cpu_percent ?? 0)}%, ${((used.rss ?? 0) / 2 ** 20).toFixed(1)} MiB, ` +
          `${used.processes} process${used.processes === 1 ? '' : 'es'}`
        : '';
  return (
    `${op.state}${reason}${latency} · ${formatElapsed((op.ended ?? now) - op.started)} · ${place}` +
    (workers.length ? ` · on ${workers.join(', ')}` : '') +
    cost
  );
}
