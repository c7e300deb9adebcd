// A relying party built on panva's openid-client, one step per run, for
// tests/oidc/test_openid_client.py: `start` prints the authorization URL and what the app
// keeps (PKCE verifier, state, nonce); `finish` takes the callback URL the provider sent
// the browser to, redeems the code, validates the ID token and reads userinfo; `refresh`
// rotates the refresh token, introspects, replays the old one and builds a logout URL;
// `revoke` revokes a refresh token and tries to use it.
import * as client from 'openid-client'

const input = JSON.parse(await new Promise((resolve) => {
  let text = ''
  process.stdin.on('data', (chunk) => { text += chunk })
  process.stdin.on('end', () => resolve(text))
}))
// The test's provider runs over plain http on a loopback address.
const options = { execute: [client.allowInsecureRequests] }
// The app was registered with the default token_endpoint_auth_method, client_secret_basic.
const auth = client.ClientSecretBasic(input.client_secret)
const config = await client.discovery(new URL(input.issuer), input.client_id, undefined, auth, options)

const failure = (error) => error.error || error.code || String(error)

if (process.argv[2] === 'refresh') {
  const fresh = await client.refreshTokenGrant(config, input.refresh_token)
  const active = (await client.tokenIntrospection(config, fresh.refresh_token)).active
  let reuse = 'accepted'
  try { await client.refreshTokenGrant(config, input.refresh_token) } catch (error) { reuse = failure(error) }
  const afterReuse = (await client.tokenIntrospection(config, fresh.refresh_token)).active
  const logout = client.buildEndSessionUrl(config, {
    id_token_hint: input.id_token, post_logout_redirect_uri: input.post_logout_redirect_uri, state: 'rp-state',
  })
  console.log(JSON.stringify({
    rotated: Boolean(fresh.refresh_token) && fresh.refresh_token !== input.refresh_token,
    scope: fresh.scope, active, reuse, afterReuse, logout: logout.href,
  }))
} else if (process.argv[2] === 'revoke') {
  await client.tokenRevocation(config, input.refresh_token, { token_type_hint: 'refresh_token' })
  let refresh = 'accepted'
  try { await client.refreshTokenGrant(config, input.refresh_token) } catch (error) { refresh = failure(error) }
  console.log(JSON.stringify({ refresh }))
} else if (process.argv[2] === 'start') {
  const verifier = client.randomPKCECodeVerifier()
  const params = {
    redirect_uri: input.redirect_uri,
    scope: 'openid email profile',
    code_challenge: await client.calculatePKCECodeChallenge(verifier),
    code_challenge_method: 'S256',
    state: client.randomState(),
    nonce: client.randomNonce(),
    ...(input.extra || {}),
  }
  const url = client.buildAuthorizationUrl(config, params)
  console.log(JSON.stringify({ url: url.href, verifier, state: params.state, nonce: params.nonce }))
} else {
  try {
    const tokens = await client.authorizationCodeGrant(config, new URL(input.callback), {
      pkceCodeVerifier: input.verifier,
      expectedState: input.state,
      expectedNonce: input.nonce,
      idTokenExpected: true,
    })
    const claims = tokens.claims()
    const userinfo = await client.fetchUserInfo(config, tokens.access_token, claims.sub)
    console.log(JSON.stringify({ claims, userinfo, refresh_token: tokens.refresh_token, id_token: tokens.id_token }))
  } catch (error) {
    console.log(JSON.stringify({ error: failure(error), name: error.name, detail: String(error.cause || error.message) }))
  }
}
