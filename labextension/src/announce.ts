import { Kernel } from '@jupyterlab/services';

import { MODULE_VERSION } from './widget';

const announced = new WeakSet<Kernel.IKernelConnection>();

/**
 * Tell the kernel a frontend with this extension is here (comm "jupyter_cancel"): it then
 * shows the rich widget instead of plain output. Sent on the shell channel, so when it is
 * sent before an execute_request the kernel sees it first. Once per kernel (and again after
 * a restart, or if the kernel closed the comm because its extension was not loaded yet).
 */
export function announce(kernel: Kernel.IKernelConnection | null | undefined): void {
  if (!kernel || announced.has(kernel)) {
    return;
  }
  announced.add(kernel);
  try {
    const comm = kernel.createComm('jupyter_cancel');
    comm.onClose = () => {
      announced.delete(kernel);
    };
    void comm.open({ version: MODULE_VERSION });
  } catch (err) {
    announced.delete(kernel);
    console.debug('jupyter_cancel: no comm', err);
  }
}

/** Forget the announcement (the kernel restarted and lost it). */
export function forget(kernel: Kernel.IKernelConnection): void {
  announced.delete(kernel);
}
