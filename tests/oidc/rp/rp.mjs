// A relying party built on panva's openid-client, one step per run, for
// tests/oidc/test_openid_client.py: `start` prints the authorization URL and what the app
// keeps (PKCE verifier, state, nonce); `finish` takes the callback URL the provider sent
// the browser to, redeems the code, validates the ID token and reads userinfo.
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

if (process.argv[2] === 'start') {
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
    console.log(JSON.stringify({ claims, userinfo }))
  } catch (error) {
    console.log(JSON.stringify({ error: error.error || error.code || String(error), name: error.name, detail: String(error.cause || error.message) }))
  }
}
