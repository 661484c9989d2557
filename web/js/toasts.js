// Alerts as toasts on every page (and, when the user allowed it, as browser notifications).

import { el, setText } from './dom.js';
import { formatTime } from './format.js';
import { on } from './state.js';

const MAX_TOASTS = 5;
const WARNING_MS = 12_000; // critical toasts stay until dismissed
const seen = new Set();

const KIND_TITLES = {
  job_failed: 'Job failed',
  job_partial: 'Job partly failed',
  job_stuck: 'Job stuck',
  cluster_failing: 'Cluster failing',
  deploy_regression: 'Deploy regression',
};

let container = null;

/** Show one toast: {severity: info|success|warning|critical, title, message, href}. */
export function toast({ severity = 'info', title = '', message = '', href = null, linkText = 'Open' }) {
  if (!container) return null;
  const close = el('button', { type: 'button', class: 'toast-close', 'aria-label': 'Dismiss' }, '×');
  const node = el('div', {
    class: `toast toast-${severity}`,
    role: severity === 'critical' ? 'alert' : 'status',
  },
  el('div', { class: 'toast-body' },
    el('strong', { class: 'toast-title', text: title }),
    el('span', { class: 'toast-message', text: message }),
    href ? el('a', { href, class: 'toast-link', text: linkText }) : null),
  close);
  const dismiss = () => node.remove();
  close.addEventListener('click', dismiss);
  container.prepend(node);
  while (container.children.length > MAX_TOASTS) container.lastElementChild.remove();
  if (severity !== 'critical') setTimeout(dismiss, WARNING_MS);
  return node;
}

/** Whether browser notifications are on for this page. */
export function notificationsEnabled() {
  return 'Notification' in window && Notification.permission === 'granted'
    && localStorage.getItem('jobmon.notify') === '1';
}

/** Ask for permission and turn browser notifications on or off; returns the new state. */
export async function toggleNotifications() {
  if (!('Notification' in window)) return false;
  if (notificationsEnabled()) {
    localStorage.setItem('jobmon.notify', '0');
    return false;
  }
  const permission = Notification.permission === 'granted' ? 'granted' : await Notification.requestPermission();
  localStorage.setItem('jobmon.notify', permission === 'granted' ? '1' : '0');
  return permission === 'granted';
}

/** Show `job-alert` events as toasts in `node`; jobLink(id) gives the link to an alert's job,
 * deploymentsLink the link for an alert about a deployment (deploy_regression). */
export function installAlertToasts(node, jobLink = null, deploymentsLink = null) {
  container = node;
  return on('alert', (alert) => {
    if (!alert || typeof alert !== 'object') return;
    const key = alert.alert_id ?? `${alert.kind}:${alert.job_id}:${alert.at}`;
    if (seen.has(key)) return; // a replay or a second tab's echo
    seen.add(key);
    if (seen.size > 500) seen.delete(seen.values().next().value);
    if (alert.earlier) return; // raised before the page opened, fetched for its alert list: not news
    const title = KIND_TITLES[alert.kind] || 'Alert';
    const when = alert.at ? ` (${formatTime(alert.at)})` : '';
    const aboutDeployment = alert.kind === 'deploy_regression';
    const href = aboutDeployment ? deploymentsLink : (alert.job_id && jobLink ? jobLink(alert.job_id) : null);
    toast({ severity: alert.severity === 'critical' ? 'critical' : 'warning', title: title + when,
      message: String(alert.message || ''), href, linkText: aboutDeployment ? 'Open deployments' : 'Open job' });
    if (notificationsEnabled() && document.visibilityState !== 'visible') {
      try {
        new Notification(`Job Monitor: ${title}`, { body: String(alert.message || ''), tag: String(key) });
      } catch { /* notifications can be blocked by the platform */ }
    }
  });
}

/** Keep a button's label in step with the notification setting. */
export function bindNotificationButton(button) {
  if (!('Notification' in window)) {
    button.hidden = true;
    return;
  }
  const render = () => {
    const enabled = notificationsEnabled();
    setText(button, enabled ? 'Notifications on' : 'Notifications off');
    button.setAttribute('aria-pressed', String(enabled));
  };
  button.addEventListener('click', async () => {
    await toggleNotifications();
    render();
  });
  render();
}
