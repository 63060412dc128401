import { LabIcon } from '@jupyterlab/ui-components';

/** Stop: a filled square, the media-player sign every user reads as "stop". */
export const stopIcon = new LabIcon({
  name: 'jupyter-cancel:stop',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" width="16"><rect class="jp-icon3" fill="#616161" x="5" y="5" width="14" height="14" rx="2"/></svg>'
});

/** The Running work panel's tab: a list of work with a stop square, unlike the round icons beside it. */
export const panelIcon = new LabIcon({
  name: 'jupyter-cancel:running-work',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" width="16"><g class="jp-icon3" fill="#616161"><rect x="2" y="4" width="12" height="2.4" rx="1"/><rect x="2" y="10.8" width="12" height="2.4" rx="1"/><rect x="2" y="17.6" width="12" height="2.4" rx="1"/><rect x="16" y="9" width="6.5" height="6.5" rx="1"/></g></svg>'
});
