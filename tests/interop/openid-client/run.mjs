// Drives panva's openid-client (6.x, on oauth4webapi 3.x) against a running tokenledger, the way
// an application would, through every flow SPEC 3 offers a standard client. The library is used
// unmodified: the only addition is its documented customFetch hook, adding the two Candescent
// headers (a fresh transactionId per request, and institutionId). allowInsecureRequests is the
// library's own switch for the plain-http test server.
//
// Input: environment variables (see `need` below), set by tests/it/interop.rs.
// Output: one JSON line on stdout, {"ok": true, "steps": [...], "requests": [...]}, or
// {"ok": false, "step": ..., "error": {...}} with exit status 1.

import * as client from 'openid-client';

function need(name) {
  const value = process.env[name];
  if (!value) {
    throw new Error(`missing environment variable ${name}`);
  }
  return value;
}

const issuer = new URL(need('TL_ISSUER'));
const institution = need('TL_INSTITUTION');
const service = { id: need('TL_SERVICE_ID'), secret: need('TL_SERVICE_SECRET') };
const app = { id: need('TL_APP_ID'), secret: need('TL_APP_SECRET') };
const partner = { id: need('TL_PARTNER_ID'), secret: need('TL_PARTNER_SECRET') };
const user = { username: need('TL_USERNAME'), password: need('TL_PASSWORD') };
const codeUser = { username: need('TL_CODE_USERNAME'), institutionUserId: need('TL_CODE_INSTITUTION_USER_ID') };

// Every request the library makes, for the report (and to prove the JWKS was fetched).
const requests = [];

/** The customFetch hook: the library's request, plus the two Candescent headers. */
function candescentFetch(url, options) {
  const headers = new Headers(options.headers);
  headers.set('transactionId', crypto.randomUUID());
  headers.set('institutionId', institution);
  requests.push(`${options.method ?? 'GET'} ${new URL(url).pathname}`);
  return fetch(url, { ...options, headers });
}

const options = { [client.customFetch]: candescentFetch, execute: [client.allowInsecureRequests] };

/** Discovery with the library's default (OIDC: /.well-known/openid-configuration). */
function discover(credentials) {
  return client.discovery(issuer, credentials.id, {}, client.ClientSecretBasic(credentials.secret), options);
}

function check(condition, message) {
  if (!condition) {
    throw new Error(`check failed: ${message}`);
  }
}

const steps = [];
let current = 'start';

/** Runs one named step; its report (small, JSON) goes into the output. */
async function step(name, body) {
  current = name;
  const report = await body();
  steps.push({ step: name, ...(report ?? {}) });
}

/**
 * The OAuth error of a call that must fail, as the library reports it: a ResponseBodyError
 * carries the body's `error`; a 401 with a WWW-Authenticate challenge (invalid_client, RFC 6749
 * 5.2) is a WWWAuthenticateChallengeError carrying the parsed challenges and the response.
 */
async function refusal(promise) {
  try {
    await promise;
  } catch (error) {
    const report = { name: error.name, error: error.error, status: error.status, code: error.code };
    if (error instanceof client.WWWAuthenticateChallengeError) {
      report.challenges = error.cause.map((c) => c.scheme);
      report.error = (await error.response.json()).error;
    }
    return report;
  }
  throw new Error('the call succeeded but should have been refused');
}

async function introspect(config, token) {
  return client.tokenIntrospection(config, token);
}

async function main() {
  let appConfig;
  await step('discovery', async () => {
    appConfig = await discover(app);
    const metadata = appConfig.serverMetadata();
    check(requests.includes('GET /.well-known/openid-configuration'), 'OIDC discovery path');
    return { issuer: metadata.issuer, token_endpoint: metadata.token_endpoint };
  });
  const serviceConfig = await discover(service);
  const partnerConfig = await discover(partner);
  // ID-token signatures are checked against the server's JWKS (jwks_uri from discovery).
  client.enableNonRepudiationChecks(partnerConfig);

  await step('client_credentials', async () => {
    const all = await client.clientCredentialsGrant(serviceConfig);
    check(typeof all.access_token === 'string' && all.token_type === 'bearer', 'token');
    check(all.refresh_token === undefined, 'no refresh token for client_credentials');
    check(typeof all.expires_in === 'number' && all.expires_in > 0, 'expires_in is a number');
    const narrow = await client.clientCredentialsGrant(serviceConfig, { scope: 'accounts:read' });
    check(narrow.scope === 'accounts:read', `narrowed scope, got ${narrow.scope}`);
    const seen = await introspect(serviceConfig, narrow.access_token);
    check(seen.active === true && seen.client_id === service.id, 'introspects active');
    return { scope: all.scope, narrowed_scope: narrow.scope };
  });

  let signedIn;
  await step('password', async () => {
    signedIn = await client.genericGrantRequest(appConfig, 'password', user);
    check(typeof signedIn.access_token === 'string' && typeof signedIn.refresh_token === 'string', 'tokens');
    return { scope: signedIn.scope };
  });

  await step('introspection', async () => {
    const seen = await introspect(appConfig, signedIn.access_token);
    check(seen.active === true, 'active');
    check(seen.username === user.username, `username, got ${seen.username}`);
    check(seen.token_type === 'access_token', 'token_type');
    check(seen.iss === appConfig.serverMetadata().issuer, 'iss is the issuer');
    const unknown = await introspect(appConfig, 'tla_not-a-token');
    check(unknown.active === false && Object.keys(unknown).length === 1, 'unknown is exactly {active:false}');
    return { active: seen.active, sub: seen.sub, username: seen.username, exp: seen.exp };
  });

  let refreshed;
  await step('refresh_rotation', async () => {
    refreshed = await client.refreshTokenGrant(appConfig, signedIn.refresh_token);
    check(refreshed.refresh_token && refreshed.refresh_token !== signedIn.refresh_token, 'a new refresh token');
    check(refreshed.access_token !== signedIn.access_token, 'a new access token');
    const old = await introspect(appConfig, signedIn.refresh_token);
    check(old.active === false, 'the rotated refresh token is spent');
    const fresh = await introspect(appConfig, refreshed.refresh_token);
    check(fresh.active === true && fresh.token_type === 'refresh_token', 'the successor is active');
    return { rotated: true };
  });

  await step('revoke_access_token', async () => {
    await client.tokenRevocation(appConfig, refreshed.access_token, { token_type_hint: 'access_token' });
    check((await introspect(appConfig, refreshed.access_token)).active === false, 'revoked');
    check((await introspect(appConfig, refreshed.refresh_token)).active === true, 'only the access token');
    // Unknown tokens are revoked the same way (RFC 7009 2.2: no error).
    await client.tokenRevocation(appConfig, 'tla_not-a-token');
    return { revoked: true };
  });

  await step('revoke_refresh_token', async () => {
    const again = await client.refreshTokenGrant(appConfig, refreshed.refresh_token);
    await client.tokenRevocation(appConfig, again.refresh_token, { token_type_hint: 'refresh_token' });
    check((await introspect(appConfig, again.refresh_token)).active === false, 'refresh token revoked');
    check((await introspect(appConfig, again.access_token)).active === false, 'its family went with it');
    const reuse = await refusal(client.refreshTokenGrant(appConfig, again.refresh_token));
    // A grant error, not an authentication challenge: the application sees the body's error.
    check(reuse.name === 'ResponseBodyError', `a ResponseBodyError: ${JSON.stringify(reuse)}`);
    check(reuse.error === 'invalid_grant' && reuse.status === 401, `refused as invalid_grant: ${JSON.stringify(reuse)}`);
    return { family_revoked: true, then: reuse.error };
  });

  await step('authorization_code_pkce', async () => {
    // The first party mints the code through the internal endpoint with its own bearer token.
    const firstParty = await client.clientCredentialsGrant(serviceConfig);
    const verifier = client.randomPKCECodeVerifier();
    const challenge = await client.calculatePKCECodeChallenge(verifier);
    const nonce = client.randomNonce();
    const form = new URLSearchParams({
      client_id: partner.id,
      scopes: 'accounts:read',
      username: codeUser.username,
      institution_user_id: codeUser.institutionUserId,
      requested_scopes: 'openid,profile,offline_access',
      nonce,
      code_challenge: challenge,
      code_challenge_method: 'S256',
    });
    const minted = await candescentFetch(new URL('/v1/auth-code', issuer).href, {
      method: 'POST',
      headers: { authorization: `Bearer ${firstParty.access_token}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: form.toString(),
    });
    const body = await minted.json();
    check(minted.status === 200, `auth-code answered ${minted.status}: ${JSON.stringify(body)}`);
    // The partner's callback, as its browser would reach it.
    const callback = new URL(body.redirect_uri);
    callback.searchParams.set('code', body.code);
    const jwksBefore = requests.filter((r) => r.endsWith('/.well-known/jwks.json')).length;
    const tokens = await client.authorizationCodeGrant(partnerConfig, callback, {
      pkceCodeVerifier: verifier,
      expectedNonce: nonce,
      idTokenExpected: true,
    });
    const claims = tokens.claims();
    check(claims.sub === codeUser.institutionUserId, `sub, got ${claims.sub}`);
    check(claims.nonce === nonce, 'nonce');
    check(claims.aud === partner.id || (Array.isArray(claims.aud) && claims.aud.includes(partner.id)), 'aud');
    check(claims.iss === partnerConfig.serverMetadata().issuer, 'iss');
    check(claims.preferred_username === codeUser.username, 'preferred_username');
    const jwksFetched = requests.filter((r) => r.endsWith('/.well-known/jwks.json')).length > jwksBefore;
    check(jwksFetched, 'the ID token signature was checked against the JWKS');
    check(typeof tokens.refresh_token === 'string', 'offline_access gives a refresh token');
    const next = await client.refreshTokenGrant(partnerConfig, tokens.refresh_token);
    check(next.refresh_token !== tokens.refresh_token, 'the code family rotates too');
    // A second redemption of the code is refused (and revokes what it issued).
    const replay = await refusal(
      client.authorizationCodeGrant(partnerConfig, callback, { pkceCodeVerifier: verifier, expectedNonce: nonce }),
    );
    check(replay.name === 'ResponseBodyError' && replay.error === 'invalid_grant', `replay refused: ${JSON.stringify(replay)}`);
    return { sub: claims.sub, aud: claims.aud, scope: tokens.scope, jwks_fetched: jwksFetched, replay: replay.error };
  });

  await step('client_authentication_failure', async () => {
    const wrong = await discover({ id: app.id, secret: 'not-the-secret' });
    const refused = await refusal(client.clientCredentialsGrant(wrong));
    check(refused.error === 'invalid_client' && refused.status === 401, `invalid_client: ${JSON.stringify(refused)}`);
    check(refused.challenges?.[0] === 'basic', `a Basic challenge: ${JSON.stringify(refused)}`);
    return { name: refused.name, error: refused.error, status: refused.status, challenges: refused.challenges };
  });
}

try {
  await main();
  console.log(JSON.stringify({ ok: true, steps, requests }));
} catch (error) {
  const detail = {
    name: error?.name,
    message: error?.message,
    code: error?.code,
    error: error?.error,
    status: error?.status,
    cause: error?.cause?.message ?? (error?.cause ? String(error.cause) : undefined),
  };
  console.log(JSON.stringify({ ok: false, step: current, error: detail, steps, requests }));
  process.exitCode = 1;
}
