// Pieces shared by several views: the status badge with its failure tooltip and progress bar.

import { el, setText, uniqueId } from '../dom.js';
import { badgeClass, failureText, formatCount } from '../format.js';

const BADGE_TEXT = { IN_PROGRESS: 'IN PROGRESS' };

/** A status widget for a job; update it with updateStatus(widget, job). */
export function statusWidget(job) {
  const tipId = uniqueId('tip');
  const badge = el('span', { class: 'badge' });
  // the text screen readers announce; the visible tooltip is the one shared element (see below)
  const tip = el('span', { class: 'sr-only', id: tipId, hidden: true });
  const bar = el('progress', { class: 'bar', hidden: true });
  const root = el('span', { class: 'status' }, badge, tip, bar);
  const widget = { root, badge, tip, bar, tipId, key: '' };
  updateStatus(widget, job);
  return widget;
}

/** Bring a status widget up to date, touching the DOM only where something changed. */
export function updateStatus(widget, job) {
  const key = `${job.status}|${job.done}|${job.failed}|${job.customer_count}|${job.http_status}|${job.error_message}`;
  if (key === widget.key) return;
  widget.key = key;
  const { root, badge, tip, bar } = widget;
  root.dataset.status = job.status;
  badge.className = badgeClass(job.status);
  setText(badge, BADGE_TEXT[job.status] || job.status);
  const failed = job.status === 'FAILED' || job.status === 'PARTIAL';
  if (failed) {
    const text = failureText(job);
    setText(tip, text);
    tip.hidden = false;
    badge.dataset.tip = text;
    badge.tabIndex = 0; // keyboard users reach the tooltip by focusing the badge
    badge.setAttribute('aria-describedby', widget.tipId);
  } else if (!tip.hidden) {
    tip.hidden = true;
    delete badge.dataset.tip;
    badge.removeAttribute('tabindex');
    badge.removeAttribute('aria-describedby');
  }
  const running = job.status === 'IN_PROGRESS';
  bar.hidden = !running;
  if (running) {
    const total = Math.max(1, job.customer_count || 0);
    if (bar.max !== total) bar.max = total;
    if (bar.value !== job.done) bar.value = job.done || 0;
    bar.setAttribute('aria-label', `${formatCount(job.done)} of ${formatCount(job.customer_count)} customers done`);
  }
}

/**
 * One floating tooltip for every badge with a data-tip (FAILED/PARTIAL), shown on hover and on
 * keyboard focus, hidden with Escape. It lives outside the tables, so rows can use paint
 * containment (which clips anything drawn outside them) and stay cheap to update.
 */
export function installTooltips() {
  if (document.getElementById('tooltip')) return;
  const tip = el('div', { id: 'tooltip', class: 'floating-tip', role: 'tooltip', hidden: true });
  document.body.append(tip);
  let anchor = null;
  const show = (target) => {
    anchor = target;
    setText(tip, target.dataset.tip);
    tip.hidden = false;
    const rect = target.getBoundingClientRect();
    const width = tip.offsetWidth;
    tip.style.left = `${Math.max(8, Math.min(rect.left, window.innerWidth - width - 8))}px`;
    const below = rect.bottom + 6;
    tip.style.top = `${below + tip.offsetHeight > window.innerHeight ? rect.top - tip.offsetHeight - 6 : below}px`;
  };
  const hide = () => { anchor = null; tip.hidden = true; };
  const badgeOf = (event) => (event.target instanceof Element ? event.target.closest('.badge[data-tip]') : null);
  document.addEventListener('mouseover', (event) => { const b = badgeOf(event); if (b) show(b); });
  document.addEventListener('mouseout', (event) => { if (badgeOf(event) && anchor && document.activeElement !== anchor) hide(); });
  document.addEventListener('focusin', (event) => { const b = badgeOf(event); if (b) show(b); });
  document.addEventListener('focusout', (event) => { if (badgeOf(event)) hide(); });
  document.addEventListener('keydown', (event) => { if (event.key === 'Escape') hide(); });
  window.addEventListener('scroll', hide, { passive: true, capture: true });
}

/** A small badge for a customer or app status (no tooltip). */
export function plainBadge(status, text = null) {
  return el('span', { class: badgeClass(status), text: text ?? String(status || '').replace('_', ' ') });
}

/** A message that a feature's endpoint is missing on this server. */
export function notAvailable(what) {
  return el('p', { class: 'notice notice-warning', role: 'status',
    text: `${what} is not available on this server yet.` });
}
