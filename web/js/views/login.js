// The sign-in form.

import { api } from '../api.js';
import { clearFieldErrors, el, field, notice, setNotice, showFieldError } from '../dom.js';

/** Render the form; calls onLoggedIn({user, csrf_token}) once the server accepts. */
export function mount(root, { message = '', onLoggedIn }) {
  const username = el('input', { id: 'login-username', name: 'username', autocomplete: 'username', required: true,
    maxlength: 64, autocapitalize: 'none', spellcheck: 'false' });
  const password = el('input', { id: 'login-password', name: 'password', type: 'password',
    autocomplete: 'current-password', required: true, maxlength: 1024 });
  const status = notice(message ? 'info' : 'error', message);
  const submit = el('button', { type: 'submit', class: 'btn btn-primary', text: 'Sign in' });
  const form = el('form', { class: 'login-form', novalidate: true, 'aria-labelledby': 'login-title' },
    el('h1', { id: 'login-title', text: 'Sign in to Job Monitor' }),
    status,
    field('Username', username),
    field('Password', password),
    submit);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearFieldErrors(form);
    setNotice(status, '');
    let invalid = false;
    if (!username.value.trim()) { showFieldError(username, 'Enter your username.'); invalid = true; }
    if (!password.value) { showFieldError(password, 'Enter your password.'); invalid = true; }
    if (invalid) return;
    submit.disabled = true;
    try {
      const answer = await api('/api/auth/login', { method: 'POST',
        json: { username: username.value.trim(), password: password.value } });
      onLoggedIn(answer);
    } catch (error) {
      if (error.field === 'username' || error.field === 'password') {
        showFieldError(error.field === 'username' ? username : password, error.message);
      } else {
        setNotice(status, error.message, 'error');
      }
      password.select();
    } finally {
      submit.disabled = false;
    }
  });
  root.append(el('section', { class: 'login' }, form));
  username.focus();
}
