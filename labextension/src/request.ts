import { PageConfig, URLExt } from '@jupyterlab/coreutils';
import { Kernel, KernelMessage, ServerConnection } from '@jupyterlab/services';
import { ICancelRequest, IControlRequest, IResources } from './types';

const API = 'jupyter-cancel/api';

/** Call the server extension's REST API; throws with the server's message on error. */
export async function requestAPI<T>(path: string, init: RequestInit = {}): Promise<T> {
  const settings = ServerConnection.makeSettings();
  const url = URLExt.join(settings.baseUrl, API, path);
  const response = await ServerConnection.makeRequest(url, init, settings);
  const text = await response.text();
  const data = text ? JSON.parse(text) : {};
  if (!response.ok) {
    throw new ServerConnection.ResponseError(response, data.message || text);
  }
  return data as T;
}

export function cancelOperation(id: string, reason = 'user'): Promise<unknown> {
  return requestAPI(`operations/${encodeURIComponent(id)}/cancel`, {
    method: 'POST',
    body: JSON.stringify({ reason })
  });
}

/** The newest output of one operation (asked of its kernel; empty if it cannot say). */
export async function operationOutput(id: string): Promise<string> {
  const data = await requestAPI<{ output: string }>(`operations/${encodeURIComponent(id)}/output`);
  return data.output;
}

/** What each running process tree costs now, by operation id (sampled on this request). */
export async function liveResources(): Promise<Record<string, IResources>> {
  const data = await requestAPI<{ resources: Record<string, IResources> }>('resources');
  return data.resources;
}

export function cancelKernel(
  kernelId: string,
  body: Pick<ICancelRequest, 'reason' | 'cell_id' | 'client_session'> = {}
): Promise<{ cancelled: string[] }> {
  return requestAPI(`kernels/${encodeURIComponent(kernelId)}/cancel`, {
    method: 'POST',
    body: JSON.stringify(body)
  });
}

export function clientClosed(clientSession: string, kernelId: string): Promise<unknown> {
  return requestAPI(`clients/${encodeURIComponent(clientSession)}/closed`, {
    method: 'POST',
    body: JSON.stringify({ kernel_id: kernelId, reason: 'tab_closed' })
  });
}

function xsrfToken(): string {
  const match = document.cookie.match('\\b_xsrf=([^;]*)\\b');
  return match ? decodeURIComponent(match[1]) : '';
}

/** This page opened notebook `path` on a kernel: it takes over the work of the page it
 * replaces, if that one went away a moment ago (a reload). */
export function clientOpened(
  clientSession: string,
  kernelId: string,
  path: string
): Promise<unknown> {
  return requestAPI(`clients/${encodeURIComponent(clientSession)}/opened`, {
    method: 'POST',
    body: JSON.stringify({ kernel_id: kernelId, path })
  });
}

/** The page is going away: a beacon survives it where fetch may not. With `path`, the server
 * waits its reload_grace for a reloaded page to take the work over before cancelling it. */
export function beaconClosed(clientSession: string, kernelId: string, path?: string): boolean {
  const settings = ServerConnection.makeSettings();
  const query: { [key: string]: string } = { _xsrf: xsrfToken() };
  const token = PageConfig.getToken();
  if (token) {
    query.token = token;
  }
  const url =
    URLExt.join(settings.baseUrl, API, `clients/${encodeURIComponent(clientSession)}/closed`) +
    URLExt.objectToQueryString(query);
  const body = new Blob([JSON.stringify({ kernel_id: kernelId, reason: 'tab_closed', path })], {
    type: 'application/json'
  });
  return navigator.sendBeacon(url, body);
}

/** The server's event stream URL (websocket). */
export function eventsUrl(): string {
  const settings = ServerConnection.makeSettings();
  const token = PageConfig.getToken();
  const url = URLExt.join(settings.wsUrl, API, 'events');
  return token ? url + URLExt.objectToQueryString({ token }) : url;
}

/**
 * Ask the kernel itself on its control channel, which it serves while a cell is busy.
 * Resolves with the reply content, or null if none came within `timeout` ms (an
 * unknown control type gets no reply at all).
 */
export async function controlRequest(
  kernel: Kernel.IKernelConnection,
  content: IControlRequest,
  timeout = 3000
): Promise<{ [key: string]: any } | null> {
  const msg = KernelMessage.createMessage({
    channel: 'control',
    msgType: 'jupyter_cancel_request' as any,
    session: kernel.clientId,
    username: kernel.username,
    content
  } as any);
  // sendControlMessage is typed for the standard control types only.
  const future = (kernel as any).sendControlMessage(msg, true, true);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timedOut = new Promise<null>(resolve => {
    timer = setTimeout(() => resolve(null), timeout);
  });
  try {
    const reply = await Promise.race([future.done, timedOut]);
    return reply ? (reply as any).content : null;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Whether the kernel can run the kernel extension (an IPython kernel). Others (IRkernel,
 * bash_kernel, xeus-python) never answer our control requests: the server owns their work.
 */
export async function hasExtension(kernel: Kernel.IKernelConnection): Promise<boolean> {
  try {
    return (await kernel.info).implementation === 'ipython';
  } catch {
    return false;
  }
}

/**
 * Stop one cell on the kernel's control channel: its work, and its Python if it is the cell
 * running now. Resolves with the kernel's reply (`running`, `cancelled`), or null. A kernel
 * without the extension has nothing finer than its interrupt: that is what it gets.
 */
export async function stopCell(
  kernel: Kernel.IKernelConnection,
  cellId: string,
  reason = 'user',
  msgId?: string
): Promise<{ [key: string]: any } | null> {
  if (!(await hasExtension(kernel))) {
    await kernel.interrupt();
    return null;
  }
  // msgId: the cell's execute request, if one was sent: still queued (Run All), it is skipped.
  const content: IControlRequest = { action: 'stop_cell', cell_id: cellId, reason };
  if (msgId) {
    content.msg_id = msgId;
  }
  return controlRequest(kernel, content);
}
