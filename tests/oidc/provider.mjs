// A real OpenID Connect provider (npm's oidc-provider) for the API tests: tests/api/test_oidc.py starts
// it, signs in through its login and consent pages, and presents the JWT access token it issues.
//
// Environment: OIDC_PORT (0: any), OIDC_AUDIENCE (the API's audience), OIDC_ALG (RS256, ES256 or EdDSA),
// OIDC_TTL (access token lifetime in seconds), OIDC_REDIRECT (the client's redirect URI).
// Prints one JSON line {"issuer": ...} once it listens; stops on SIGTERM.
import crypto from 'node:crypto';
import http from 'node:http';
import Provider from 'oidc-provider';

const alg = process.env.OIDC_ALG || 'RS256';
const audience = process.env.OIDC_AUDIENCE || 'https://mail.example.com/api';
const ttl = Number(process.env.OIDC_TTL || 600);
const redirect = process.env.OIDC_REDIRECT || 'http://127.0.0.1/callback';

function signingKey() {
  const [type, options] = {
    RS256: ['rsa', { modulusLength: 2048 }],
    ES256: ['ec', { namedCurve: 'P-256' }],
    EdDSA: ['ed25519', {}],
  }[alg];
  const { privateKey } = crypto.generateKeyPairSync(type, options);
  return { ...privateKey.export({ format: 'jwk' }), kid: crypto.randomUUID(), use: 'sig', alg };
}

const server = http.createServer();
server.listen(Number(process.env.OIDC_PORT || 0), '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: 'relate-web',
        application_type: 'native',
        token_endpoint_auth_method: 'none',
        redirect_uris: [redirect],
        grant_types: ['authorization_code'],
        response_types: ['code'],
        id_token_signed_response_alg: alg,
      },
    ],
    jwks: { keys: [signingKey()] },
    cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
    // The dev login page takes any name: the name is the account and its email address.
    findAccount: async (ctx, id) => ({
      accountId: id,
      claims: async () => ({ sub: id, email: id, email_verified: true }),
    }),
    claims: { openid: ['sub'], email: ['email', 'email_verified'] },
    scopes: ['openid', 'email', 'relate.app', 'relate.read'],
    pkce: { required: () => true },
    features: {
      devInteractions: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => audience,
        useGrantedResource: () => true,
        getResourceServerInfo: () => ({
          scope: 'relate.app relate.read',
          audience,
          accessTokenTTL: ttl,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg } },
        }),
      },
    },
    extraTokenClaims: async (ctx, token) => ({ email: token.accountId, email_verified: true }),
  });
  server.on('request', provider.callback());
  process.stdout.write(JSON.stringify({ issuer }) + '\n');
});
// close() waits for idle keep-alive connections (a test's HTTP client may hold one): end them too.
process.on('SIGTERM', () => {
  server.close(() => process.exit(0));
  server.closeAllConnections();
});
