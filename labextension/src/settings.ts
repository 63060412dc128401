import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { Token } from '@lumino/coreutils';

import { ISettings } from './types';

/** The plugin whose schema (schema/plugin.json) holds the extension's settings. */
export const PLUGIN_ID = 'jupyter-cancel:plugin';

export const DEFAULTS: ISettings = {
  stopButtonScope: 'kernel',
  cancelOnClose: true,
  stopBeforeRerun: true
};

/** The extension's settings (Settings → jupyter_cancel), kept current as the user edits them. */
export class CancelSettings {
  private _current: ISettings = { ...DEFAULTS };

  get current(): ISettings {
    return this._current;
  }

  load(registry: ISettingRegistry): void {
    void registry
      .load(PLUGIN_ID)
      .then(settings => {
        const apply = () => {
          this._current = { ...DEFAULTS, ...(settings.composite as unknown as ISettings) };
        };
        apply();
        settings.changed.connect(apply);
      })
      .catch(err => console.warn('jupyter_cancel: settings not loaded', err));
  }
}

/** Given to the plugins that read the settings (the cell executor, the notebook tools). */
export const ICancelSettings = new Token<CancelSettings>(
  'jupyter-cancel:settings',
  "jupyter_cancel's settings, kept current"
);
