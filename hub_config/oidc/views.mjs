// HTML of the login steps. Every value placed in a page goes through escapeHtml.

export function escapeHtml(value) {
  return String(value)
    .replaceAll('&', '&amp;')
    .replaceAll('<', '&lt;')
    .replaceAll('>', '&gt;')
    .replaceAll('"', '&quot;')
    .replaceAll("'", '&#39;');
}

function page(title, body) {
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(title)}</title>
<style>
  body { font-family: system-ui, sans-serif; background: #f4f5f7; margin: 0; }
  main { max-width: 22rem; margin: 4rem auto; background: #fff; padding: 2rem;
         border-radius: 8px; box-shadow: 0 1px 4px rgba(0,0,0,.15); }
  h1 { font-size: 1.3rem; margin-top: 0; }
  label { display: block; margin: 1rem 0 .3rem; }
  input { width: 100%; box-sizing: border-box; padding: .5rem; font-size: 1rem; }
  button { margin-top: 1.5rem; width: 100%; padding: .6rem; font-size: 1rem; }
  .error { color: #a40000; }
  .note { color: #555; font-size: .9rem; }
</style>
</head>
<body><main>
${body}
</main></body>
</html>`;
}

export function loginPage({ uid, clientName, username = '', error = '' }) {
  const message = error ? `<p class="error" role="alert">${escapeHtml(error)}</p>` : '';
  return page('Sign in to the research enclave', `
<h1>Sign in to the research enclave</h1>
<p class="note">${escapeHtml(clientName)} asks you to sign in.</p>
${message}
<form method="post" action="/interaction/${escapeHtml(uid)}/login" autocomplete="off">
  <label for="username">User name</label>
  <input id="username" name="username" value="${escapeHtml(username)}" required autofocus>
  <label for="password">Password</label>
  <input id="password" name="password" type="password" required>
  <button type="submit">Sign in</button>
</form>
<form method="post" action="/interaction/${escapeHtml(uid)}/abort">
  <button type="submit">Cancel</button>
</form>`);
}

export function otpPage({ uid, username, error = '' }) {
  const message = error ? `<p class="error" role="alert">${escapeHtml(error)}</p>` : '';
  return page('Second factor', `
<h1>Second factor</h1>
<p class="note">Enter the 6-digit code from the authenticator app of ${escapeHtml(username)}.</p>
${message}
<form method="post" action="/interaction/${escapeHtml(uid)}/otp" autocomplete="off">
  <label for="otp">Code</label>
  <input id="otp" name="otp" inputmode="numeric" pattern="[0-9]{6}" required autofocus>
  <button type="submit">Verify</button>
</form>`);
}

export function errorPage(title, detail) {
  return page(title, `<h1>${escapeHtml(title)}</h1><p>${escapeHtml(detail)}</p>`);
}
