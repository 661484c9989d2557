// The dashboard page: session check, header (user, connection state, logout), hash routing to views.

import { api, setUnauthorizedHandler } from './api.js';
import { setText } from './dom.js';
import { formatTime } from './format.js';
import { connect, disconnect } from './socket.js';
import { live, on, resetState, session } from './state.js';
import { bindNotificationButton, installAlertToasts, toast } from './toasts.js';
import * as loginView from './views/login.js';
import * as jobsView from './views/jobs.js';
import * as newActionView from './views/new-action.js';
import * as jobDetailView from './views/job-detail.js';
import * as scopeView from './views/scope.js';
import * as statsView from './views/stats.js';
import * as pipelinesView from './views/pipelines.js';
import * as deploymentsView from './views/deployments.js';
import * as tokensView from './views/tokens.js';
import * as adminView from './views/admin.js';
import { installTooltips } from './views/widgets.js';

const ROUTES = [
  { pattern: /^\/jobs\/([^/]{1,64})$/, view: jobDetailView, nav: 'jobs', title: 'Job' },
  { pattern: /^\/jobs$/, view: jobsView, nav: 'jobs', title: 'My jobs' },
  { pattern: /^\/new$/, view: newActionView, nav: 'new', title: 'New Set Action' },
  { pattern: /^\/scope(?:\/(customers|apps))?$/, view: scopeView, nav: 'scope', title: 'Scoped views' },
  { pattern: /^\/stats$/, view: statsView, nav: 'stats', title: 'Stats' },
  { pattern: /^\/pipelines$/, view: pipelinesView, nav: 'pipelines', title: 'Pipelines' },
  { pattern: /^\/deployments$/, view: deploymentsView, nav: 'deployments', title: 'Deployments' },
  { pattern: /^\/tokens$/, view: tokensView, nav: 'tokens', title: 'Tokens' },
  { pattern: /^\/admin(?:\/([a-z]+))?$/, view: adminView, nav: 'admin', title: 'Admin' },
];

const CONNECTION_TEXT = {
  connecting: 'Connecting…', live: 'Live', reconnecting: 'Reconnecting…', offline: 'Offline',
};

const main = document.getElementById('main');
const topbar = document.getElementById('topbar');
let unmount = null;
let stopListening = [];

function route() {
  const hash = location.hash.startsWith('#/') ? location.hash.slice(1) : '/jobs';
  const [path, search = ''] = hash.split('?');
  for (const entry of ROUTES) {
    const match = path.match(entry.pattern);
    if (match) return { ...entry, match, params: new URLSearchParams(search) };
  }
  return { ...ROUTES[1], match: ['/jobs'], params: new URLSearchParams() };
}

function render() {
  if (!session.user) return;
  if (location.hash && !location.hash.startsWith('#/')) return; // in-page anchors are not routes
  if (unmount) unmount();
  unmount = null;
  main.replaceChildren();
  const current = route();
  for (const link of document.querySelectorAll('[data-nav]')) {
    if (link.dataset.nav === current.nav) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  document.title = `${current.title} · Job Monitor`;
  unmount = current.view.mount(main, { match: current.match, params: current.params }) || null;
}

function renderConnection() {
  const pill = document.getElementById('conn');
  pill.dataset.state = live.state;
  setText(document.getElementById('conn-text'), CONNECTION_TEXT[live.state] || live.state);
  const since = live.state === 'live' ? live.connectedAt : live.disconnectedAt;
  const when = since ? ` since ${formatTime(new Date(since).toISOString())}` : '';
  pill.title = `${CONNECTION_TEXT[live.state]}${when}${live.reason ? ` – ${live.reason}` : ''}`;
}

function showLogin(message) {
  if (unmount) unmount();
  unmount = null;
  topbar.hidden = true;
  document.title = 'Sign in · Job Monitor';
  main.replaceChildren();
  loginView.mount(main, { message, onLoggedIn: startSession });
}

function startSession({ user, csrf_token: csrf }) {
  session.user = user;
  session.csrf = csrf;
  topbar.hidden = false;
  setText(document.getElementById('who'), `${user.username}${user.role === 'admin' ? ' (admin)' : ''}`);
  document.getElementById('nav-admin').hidden = user.role !== 'admin';
  connect({
    resume: true,
    onRefused: (refusal) => {
      const ended = refusal.code === 'unauthorized' || refusal.code === 'session_expired';
      if (ended) endSession('Your session has ended; please sign in again.');
      return !ended;
    },
  });
  if (!location.hash.startsWith('#/')) history.replaceState(null, '', '#/jobs');
  render();
}

function endSession(message) {
  if (!session.user) return;
  disconnect();
  resetState();
  showLogin(message);
}

async function logout() {
  try {
    await api('/api/auth/logout', { method: 'POST' });
  } catch (error) {
    if (error.status !== 401) toast({ severity: 'warning', title: 'Logout', message: error.message });
  }
  endSession('You are signed out.');
}

async function boot() {
  installAlertToasts(document.getElementById('toasts'), (jobId) => `#/jobs/${encodeURIComponent(jobId)}`,
    '#/deployments');
  bindNotificationButton(document.getElementById('notify-btn'));
  installTooltips();
  document.getElementById('logout-btn').addEventListener('click', logout);
  document.getElementById('skip-link').addEventListener('click', (event) => {
    event.preventDefault();
    main.focus();
  });
  stopListening.push(on('connection', renderConnection));
  renderConnection();
  setUnauthorizedHandler(() => endSession('Your session has ended; please sign in again.'));
  window.addEventListener('hashchange', render);
  try {
    startSession(await api('/api/auth/me'));
  } catch (error) {
    showLogin(error.status === 401 || error.status === 403 ? '' : error.message);
  }
}

boot();
