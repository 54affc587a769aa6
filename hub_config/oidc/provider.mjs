// The enclave's OpenID Connect provider: oidc-provider with our own login steps.
//
// Usage: node provider.mjs --config PROVIDER.json
//
// PROVIDER.json (written by enclave.hub.launch, mode 0600) contains:
//   issuer, host, port, state_dir, accounts_file,
//   clients: [{client_id, client_secret, client_name, redirect_uris,
//              post_logout_redirect_uris, first_party}]
// The signing key and the cookie keys are created in state_dir at first start
// (mode 0600) and reused after that.
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { parseArgs } from 'node:util';

import Provider, { errors } from 'oidc-provider';

import { verifyPassword } from './passwords.mjs';
import { verifyTotp } from './totp.mjs';
import {
  errorPage, loginPage, otpPage,
} from './views.mjs';

const ACR_PASSWORD = 'urn:enclave:pwd';
const ACR_MFA = 'urn:enclave:mfa';
const MAX_FAILURES = 5;
const LOCKOUT_MS = 60_000;
const PENDING_OTP_MS = 5 * 60_000;
const MAX_FORM_BYTES = 8192;

function log(message) {
  process.stderr.write(`${new Date().toISOString()} enclave-idp: ${message}\n`);
}

function readJson(file) {
  return JSON.parse(fs.readFileSync(file, 'utf8'));
}

function writeSecretJson(file, value) {
  fs.writeFileSync(file, JSON.stringify(value), { mode: 0o600, flag: 'wx' });
}

function loadOrCreate(file, create) {
  if (fs.existsSync(file)) {
    const mode = fs.statSync(file).mode & 0o777;
    if (mode & 0o077) {
      throw new Error(`${file} is readable by other users (mode ${mode.toString(8)}); run chmod 600 ${file}`);
    }
    return readJson(file);
  }
  const value = create();
  writeSecretJson(file, value);
  return value;
}

function createSigningKey() {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 3072 });
  const jwk = privateKey.export({ format: 'jwk' });
  return { ...jwk, kid: crypto.randomUUID(), alg: 'RS256', use: 'sig' };
}

function createCookieKeys() {
  return [crypto.randomBytes(32).toString('base64url')];
}

function loadAccounts(file) {
  const { accounts } = readJson(file);
  const bySub = new Map();
  const byUsername = new Map();
  for (const account of accounts) {
    for (const field of ['sub', 'username', 'password_hash', 'groups']) {
      if (!(field in account)) {
        throw new Error(`account ${JSON.stringify(account.username)} in ${file} has no ${field}`);
      }
    }
    bySub.set(account.sub, account);
    byUsername.set(account.username, account);
  }
  return { bySub, byUsername };
}

function readForm(req) {
  return new Promise((resolve, reject) => {
    let size = 0;
    const chunks = [];
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > MAX_FORM_BYTES) {
        reject(new Error('form too large'));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(new URLSearchParams(Buffer.concat(chunks).toString('utf8'))));
    req.on('error', reject);
  });
}

function sendHtml(res, status, html) {
  res.writeHead(status, {
    'Content-Type': 'text/html; charset=utf-8',
    'Cache-Control': 'no-store',
    'X-Frame-Options': 'DENY',
    // No form-action directive: browsers apply it to the redirects after a
    // form is sent too, and the sign-in ends with a redirect to the hub.
    'Content-Security-Policy': "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
  });
  res.end(html);
}

// Failed attempts per user name, so that guessing a password or a code gets
// slow: after MAX_FAILURES failures the name is locked for LOCKOUT_MS.
class Throttle {
  #entries = new Map();

  isLocked(name) {
    const entry = this.#entries.get(name);
    return Boolean(entry && entry.lockedUntil > Date.now());
  }

  fail(name) {
    const entry = this.#entries.get(name) ?? { failures: 0, lockedUntil: 0 };
    entry.failures += 1;
    if (entry.failures >= MAX_FAILURES) {
      entry.lockedUntil = Date.now() + LOCKOUT_MS;
      entry.failures = 0;
      log(`user ${name} locked for ${LOCKOUT_MS / 1000} s after ${MAX_FAILURES} failed attempts`);
    }
    this.#entries.set(name, entry);
  }

  succeed(name) {
    this.#entries.delete(name);
  }
}

function buildProvider(config, accounts) {
  const stateDir = config.state_dir;
  const signingKey = loadOrCreate(path.join(stateDir, 'signing-key.jwk.json'), createSigningKey);
  const cookieKeys = loadOrCreate(path.join(stateDir, 'cookie-keys.json'), createCookieKeys);

  const clients = config.clients.map((client) => ({
    client_id: client.client_id,
    client_secret: client.client_secret,
    client_name: client.client_name ?? client.client_id,
    redirect_uris: client.redirect_uris,
    post_logout_redirect_uris: client.post_logout_redirect_uris ?? [],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }));

  return new Provider(config.issuer, {
    clients,
    jwks: { keys: [signingKey] },
    cookies: { keys: cookieKeys },
    async findAccount(ctx, sub) {
      const account = accounts.bySub.get(sub);
      if (!account) {
        return undefined;
      }
      return {
        accountId: sub,
        async claims() {
          return {
            sub,
            preferred_username: account.username,
            name: account.name ?? account.username,
            email: account.email,
            email_verified: Boolean(account.email),
            groups: account.groups,
          };
        },
      };
    },
    // amr and acr belong to the openid scope, so every ID token states how
    // the user signed in without the client requesting these claims.
    claims: {
      openid: ['sub', 'acr', 'amr', 'auth_time'],
      profile: ['name', 'preferred_username'],
      email: ['email', 'email_verified'],
      groups: ['groups'],
      acr: null,
      amr: null,
      auth_time: null,
      sid: null,
      iss: null,
    },
    acrValues: [ACR_PASSWORD, ACR_MFA],
    // The hub reads the user's claims from the ID token, so the ID token
    // carries every claim of the granted scopes, not only sub.
    conformIdTokenClaims: false,
    responseTypes: ['code'],
    pkce: { required: () => false },
    features: {
      devInteractions: { enabled: false },
      rpInitiatedLogout: { enabled: true },
      revocation: { enabled: true },
    },
    interactions: {
      url: (ctx, interaction) => `/interaction/${interaction.uid}`,
    },
    ttl: {
      AccessToken: 3600,
      AuthorizationCode: 60,
      IdToken: 3600,
      Interaction: 600,
      Session: 8 * 3600,
      Grant: 8 * 3600,
    },
    async renderError(ctx, out) {
      ctx.type = 'html';
      ctx.body = errorPage('Sign-in failed', `${out.error}: ${out.error_description ?? ''}`);
    },
  });
}

function createInteractionHandler(provider, config, accounts) {
  const firstParty = new Set(
    config.clients.filter((client) => client.first_party).map((client) => client.client_id),
  );
  const throttle = new Throttle();
  const pendingOtp = new Map();
  const lastOtpStep = new Map();
  // Sign-ins abandoned between password and code are dropped once expired.
  setInterval(() => {
    const now = Date.now();
    for (const [uid, pending] of pendingOtp) {
      if (pending.expires < now) {
        pendingOtp.delete(uid);
      }
    }
  }, 60_000).unref();

  async function clientName(clientId) {
    const client = await provider.Client.find(clientId);
    return client?.clientName ?? clientId;
  }

  async function finishLogin(req, res, account, amr) {
    const result = {
      login: {
        accountId: account.sub,
        amr,
        acr: amr.includes('otp') ? ACR_MFA : ACR_PASSWORD,
        remember: false,
      },
    };
    log(`login succeeded for ${account.username} (amr ${amr.join('+')})`);
    await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
  }

  // First-party clients get their grant without a consent page, but still
  // through the authorization code flow and the provider's own checks.
  async function grantConsent(req, res, details) {
    const { prompt, params, session } = details;
    if (!firstParty.has(params.client_id)) {
      sendHtml(res, 403, errorPage('Consent required', 'This client is not a first-party client of the enclave.'));
      return;
    }
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    if (prompt.details.missingOIDCScope) {
      grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
    }
    if (prompt.details.missingOIDCClaims) {
      grant.addOIDCClaims(prompt.details.missingOIDCClaims);
    }
    for (const [indicator, scopes] of Object.entries(prompt.details.missingResourceScopes ?? {})) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
    const grantId = await grant.save();
    const consent = details.grantId ? {} : { grantId };
    await provider.interactionFinished(req, res, { consent }, { mergeWithLastSubmission: true });
  }

  async function showStep(req, res, details) {
    if (details.prompt.name === 'consent') {
      await grantConsent(req, res, details);
      return;
    }
    const pending = pendingOtp.get(details.uid);
    if (pending) {
      sendHtml(res, 200, otpPage({ uid: details.uid, username: pending.username }));
      return;
    }
    const name = await clientName(details.params.client_id);
    sendHtml(res, 200, loginPage({ uid: details.uid, clientName: name }));
  }

  async function submitPassword(req, res, details) {
    const form = await readForm(req);
    const username = (form.get('username') ?? '').trim();
    const password = form.get('password') ?? '';
    const name = await clientName(details.params.client_id);
    const account = accounts.byUsername.get(username);

    if (throttle.isLocked(username)) {
      log(`login rejected for ${JSON.stringify(username)}: locked after failed attempts`);
      sendHtml(res, 429, loginPage({
        uid: details.uid, clientName: name, username, error: 'Too many failed attempts. Wait a minute and try again.',
      }));
      return;
    }
    const valid = await verifyPassword(password, account?.password_hash);
    if (!valid) {
      throttle.fail(username);
      log(`login failed for ${JSON.stringify(username)}: ${account ? 'wrong password' : 'unknown user'}`);
      sendHtml(res, 401, loginPage({
        uid: details.uid, clientName: name, username, error: 'Invalid user name or password.',
      }));
      return;
    }

    if (account.totp_secret) {
      pendingOtp.set(details.uid, {
        sub: account.sub, username, expires: Date.now() + PENDING_OTP_MS,
      });
      sendHtml(res, 200, otpPage({ uid: details.uid, username }));
      return;
    }
    throttle.succeed(username);
    await finishLogin(req, res, account, ['pwd']);
  }

  async function submitOtp(req, res, details) {
    const pending = pendingOtp.get(details.uid);
    if (!pending || pending.expires < Date.now()) {
      pendingOtp.delete(details.uid);
      sendHtml(res, 400, errorPage('Sign-in expired', 'Start again from the application you were signing in to.'));
      return;
    }
    const account = accounts.bySub.get(pending.sub);
    const form = await readForm(req);
    const code = (form.get('otp') ?? '').trim();

    if (throttle.isLocked(pending.username)) {
      pendingOtp.delete(details.uid);
      sendHtml(res, 429, errorPage('Too many failed attempts', 'Wait a minute and sign in again.'));
      return;
    }
    const step = verifyTotp(account.totp_secret, code, Date.now() / 1000);
    const replayed = step !== null && step <= (lastOtpStep.get(account.sub) ?? -1);
    if (step === null || replayed) {
      throttle.fail(pending.username);
      log(`second factor failed for ${pending.username}: ${replayed ? 'code already used' : 'wrong code'}`);
      sendHtml(res, 401, otpPage({
        uid: details.uid, username: pending.username, error: 'Invalid or already used code.',
      }));
      return;
    }

    lastOtpStep.set(account.sub, step);
    pendingOtp.delete(details.uid);
    throttle.succeed(pending.username);
    await finishLogin(req, res, account, ['pwd', 'otp']);
  }

  return async function handleInteraction(req, res) {
    const url = new URL(req.url, config.issuer);
    const match = /^\/interaction\/([\w-]+)(?:\/(login|otp|abort))?$/.exec(url.pathname);
    if (!match) {
      sendHtml(res, 404, errorPage('Not found', 'No such page.'));
      return;
    }
    const action = match[2];
    try {
      const details = await provider.interactionDetails(req, res);
      if (details.uid !== match[1]) {
        sendHtml(res, 400, errorPage('Sign-in expired', 'Start again from the application you were signing in to.'));
        return;
      }
      if (!action && req.method === 'GET') {
        await showStep(req, res, details);
      } else if (action === 'login' && req.method === 'POST') {
        await submitPassword(req, res, details);
      } else if (action === 'otp' && req.method === 'POST') {
        await submitOtp(req, res, details);
      } else if (action === 'abort' && req.method === 'POST') {
        pendingOtp.delete(details.uid);
        await provider.interactionFinished(req, res, {
          error: 'access_denied', error_description: 'The user cancelled the sign-in.',
        }, { mergeWithLastSubmission: false });
      } else {
        sendHtml(res, 405, errorPage('Method not allowed', `${req.method} is not allowed here.`));
      }
    } catch (error) {
      if (error instanceof errors.SessionNotFound || error instanceof errors.InvalidRequest) {
        sendHtml(res, 400, errorPage('Sign-in expired', 'Start again from the application you were signing in to.'));
        return;
      }
      log(`interaction ${match[1]} failed: ${error.stack ?? error}`);
      sendHtml(res, 500, errorPage('Sign-in failed', 'The identity provider failed with an internal error. See its log.'));
    }
  };
}

function main() {
  const { values } = parseArgs({ options: { config: { type: 'string' } } });
  if (!values.config) {
    process.stderr.write('usage: node provider.mjs --config PROVIDER.json\n');
    process.exit(2);
  }
  const config = readJson(values.config);
  const accounts = loadAccounts(config.accounts_file);
  const provider = buildProvider(config, accounts);
  provider.on('server_error', (ctx, error) => log(`server error: ${error.stack ?? error}`));
  provider.on('grant.error', (ctx, error) => log(`token request rejected: ${error.message} (${error.error_description ?? ''})`));

  const handleInteraction = createInteractionHandler(provider, config, accounts);
  const providerCallback = provider.callback();
  const server = http.createServer((req, res) => {
    if (req.url.startsWith('/interaction/')) {
      handleInteraction(req, res);
    } else {
      providerCallback(req, res);
    }
  });

  server.listen(config.port, config.host, () => {
    log(`listening on ${config.issuer} with ${accounts.bySub.size} accounts`);
  });
  for (const signal of ['SIGTERM', 'SIGINT']) {
    process.on(signal, () => {
      log(`stopping on ${signal}`);
      server.close(() => process.exit(0));
      setTimeout(() => process.exit(0), 2000).unref();
    });
  }
}

main();
