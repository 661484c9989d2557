// API tokens: create (shown once, with a wallboard link for read tokens), list, revoke.

import { api } from '../api.js';
import { clearFieldErrors, el, field, notice, replace, setNotice, showFieldError } from '../dom.js';
import { formatTime } from '../format.js';
import { session } from '../state.js';

const AGENT_HINT = 'for CI/CD agents: report pipeline jobs and deployments';

/** A table of tokens with revoke buttons; all=true lists everyone's (admins). */
export function tokenTable({ all = false, onChange = null } = {}) {
  const status = notice('info');
  const tbody = el('tbody');
  const headers = ['Name', 'Scope', 'Prefix', 'Created', 'Revoked', ''];
  if (all) headers.splice(1, 0, 'User id');
  const root = el('div', {}, status, el('div', { class: 'table-wrap' }, el('table', { class: 'data', id: all ? 'all-tokens' : 'my-tokens' },
    el('thead', {}, el('tr', {}, headers.map((name) => el('th', { scope: 'col', text: name })))), tbody)));

  async function load() {
    try {
      const { tokens } = await api(`/api/tokens${all ? '?all=true' : ''}`);
      replace(tbody, tokens.length ? tokens.map((t) => el('tr', { dataset: { tokenId: t.id } },
        el('td', { text: t.name }),
        all ? el('td', { class: 'num', text: t.user_id }) : null,
        el('td', {}, el('span', { class: `badge badge-scope-${t.scope}`, text: t.scope })),
        el('td', { class: 'mono', text: `${t.prefix}…` }),
        el('td', { text: formatTime(t.created_at, { alwaysDate: true }) }),
        el('td', { text: formatTime(t.revoked_at, { alwaysDate: true }) }),
        el('td', {}, t.revoked_at ? '' : el('button', { type: 'button', class: 'btn btn-danger btn-small',
          text: 'Revoke', 'aria-label': `Revoke token ${t.name}`, onclick: () => revoke(t) }))))
        : el('tr', {}, el('td', { colspan: headers.length, text: 'No tokens yet.' })));
    } catch (error) {
      setNotice(status, `Could not list tokens: ${error.message}`, 'error');
    }
  }

  async function revoke(token) {
    if (!window.confirm(`Revoke the token "${token.name}"? Wallboards and scripts using it stop at once.`)) return;
    try {
      await api(`/api/tokens/${encodeURIComponent(token.id)}`, { method: 'DELETE' });
      setNotice(status, `Token "${token.name}" revoked.`, 'success');
      load();
      if (onChange) onChange();
    } catch (error) {
      setNotice(status, error.message, 'error');
    }
  }

  return { root, load };
}

export function mount(root) {
  const name = el('input', { id: 'token-name', maxlength: 100, required: true, placeholder: 'Wallboard in the ops room' });
  const scope = el('select', { id: 'token-scope' },
    el('option', { value: 'read', text: 'read – wallboards and alert listeners' }),
    el('option', { value: 'agent', text: `agent – ${AGENT_HINT}` }),
    el('option', { value: 'write', text: 'write – scripts that start Set Actions' }),
    session.user && session.user.role === 'admin' ? el('option', { value: 'admin', text: 'admin' }) : null);
  const status = notice('error');
  const created = el('div', { class: 'created-token', id: 'token-created', hidden: true, 'aria-live': 'polite' });
  const form = el('form', { class: 'card form', novalidate: true },
    el('h2', { text: 'New token' }), status,
    el('div', { class: 'row' }, field('Name', name), field('Scope', scope)),
    el('div', { class: 'buttons' }, el('button', { type: 'submit', class: 'btn btn-primary', id: 'token-create', text: 'Create token' })),
    created);
  const table = tokenTable();
  replace(root,
    el('div', { class: 'page-head' }, el('h1', { text: 'API tokens' })),
    el('p', { class: 'hint', text: 'A token is shown once. A read token opens the wallboard: /wallboard#token=… '
      + '(the part after # never leaves the browser in a request line).' }),
    form,
    el('section', { class: 'card' }, el('h2', { text: 'Your tokens' }), table.root));

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearFieldErrors(form);
    setNotice(status, '');
    if (!name.value.trim()) { showFieldError(name, 'Give the token a name.'); return; }
    try {
      const { token } = await api('/api/tokens', { method: 'POST', json: { name: name.value.trim(), scope: scope.value } });
      const secret = el('input', { id: 'token-secret', class: 'mono', readonly: true, value: token.token,
        'aria-label': 'The new token (shown once)' });
      const copy = el('button', { type: 'button', class: 'btn', text: 'Copy', onclick: async () => {
        secret.select();
        try { await navigator.clipboard.writeText(token.token); copy.textContent = 'Copied'; } catch { /* selected for ⌘C */ }
      } });
      replace(created, el('p', {}, el('strong', { text: `Token "${token.name}" (${token.scope})` }),
        ' – copy it now, it is not shown again.'), el('div', { class: 'row' }, secret, copy),
      token.scope === 'read' ? el('p', {}, el('a', { href: `/wallboard#token=${encodeURIComponent(token.token)}`,
        id: 'token-wallboard', target: '_blank', rel: 'noopener', text: 'Open the wallboard with this token' })) : null,
      token.scope === 'agent' ? el('p', { class: 'hint', id: 'token-agent-hint', text: 'Give it to the agent as '
        + '"Authorization: Bearer <token>"; it reports to /api/dashboard/jobs and /api/dashboard/deployments, '
        + 'shown under Pipelines and Deployments.' }) : null);
      created.hidden = false;
      name.value = '';
      table.load();
    } catch (error) {
      if (error.field === 'name') showFieldError(name, error.message);
      else if (error.field === 'scope') showFieldError(scope, error.message);
      else setNotice(status, error.message, 'error');
    }
  });
  table.load();
}
