import { ISignal, Signal } from '@lumino/signaling';

import { eventsUrl, requestAPI } from './request';
import { IOperation, IOperationEvent, IResources } from './types';

/**
 * `fn` run at most once per animation frame however often it is asked for: 200 operations
 * ending at once are 200 events, and one render.
 */
export function coalesced(fn: () => void): () => void {
  let pending = false;
  return () => {
    if (pending) {
      return;
    }
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      fn();
    });
  };
}

/** The server's live view of every kernel's operations, from its event stream. */
export class OperationsStore {
  private _ops = new Map<string, IOperation>();
  private _changed = new Signal<this, void>(this);
  private _socket: WebSocket | null = null;
  private _disposed = false;
  private _retry = 500;
  /** Ended operations the user cleared from the list (a snapshot must not bring them back). */
  private _cleared = new Set<string>();

  constructor() {
    this.connect();
  }

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  operations(): IOperation[] {
    return [...this._ops.values()].sort((a, b) => b.started - a.started);
  }

  live(kernelId?: string): IOperation[] {
    return this.operations().filter(
      op =>
        (op.state === 'running' || op.state === 'pending') &&
        (!kernelId || op.kernel_id === kernelId)
    );
  }

  async refresh(): Promise<void> {
    const data = await requestAPI<{ operations: IOperation[] }>('operations');
    this._ops = new Map(
      data.operations.filter(op => !this._cleared.has(op.id)).map(op => [op.id, op])
    );
    this._changed.emit();
  }

  /** Live figures sampled for running operations: kept on them until their next event. */
  mergeResources(sampled: Record<string, IResources>): IOperation[] {
    const touched: IOperation[] = [];
    for (const [id, used] of Object.entries(sampled)) {
      const op = this._ops.get(id);
      if (op && (op.state === 'running' || op.state === 'pending')) {
        op.resources = used;
        touched.push(op);
      }
    }
    return touched;
  }

  /** Drop every ended operation from the list (they stay in the server's history). */
  clearEnded(): void {
    for (const op of this.operations()) {
      if (op.state !== 'running' && op.state !== 'pending') {
        this._ops.delete(op.id);
        this._cleared.add(op.id);
      }
    }
    this._changed.emit();
  }

  private connect(): void {
    if (this._disposed) {
      return;
    }
    const socket = new WebSocket(eventsUrl());
    this._socket = socket;
    socket.onmessage = event => this.handle(JSON.parse(event.data) as IOperationEvent);
    socket.onopen = () => {
      this._retry = 500;
    };
    socket.onclose = () => {
      if (!this._disposed) {
        // The server restarted or the network blinked: reconnect with back-off.
        setTimeout(() => this.connect(), this._retry);
        this._retry = Math.min(this._retry * 2, 10000);
      }
    };
  }

  private handle(message: IOperationEvent): void {
    if (message.event === 'snapshot') {
      this._ops = new Map(
        (message.operations ?? []).filter(op => !this._cleared.has(op.id)).map(op => [op.id, op])
      );
    } else if (message.operation && !this._cleared.has(message.operation.id)) {
      const previous = this._ops.get(message.operation.id);
      this._ops.set(message.operation.id, { ...previous, ...message.operation });
      if (this._ops.size > 500) {
        const oldest = this.operations()
          .filter(op => op.state !== 'running')
          .pop();
        if (oldest) {
          this._ops.delete(oldest.id);
        }
      }
    }
    this._changed.emit();
  }

  dispose(): void {
    this._disposed = true;
    this._socket?.close();
  }
}
