// A Keycloak-shaped OpenID provider for development and CI, built on the
// certified oidc-provider library: issuer http://HOST:PORT/realms/REALM,
// Keycloak's paths (/protocol/openid-connect/{token,certs},
// /.well-known/openid-configuration), client authentication by secret, and
// Keycloak's "direct access grant" (the password grant) issuing RS256 JWT
// access tokens with sub, preferred_username, aud, azp, exp, realm_access.
//
// Usage: node server.js --port 8081 --realm kumulus --client kumulus \
//          --secret S --audience kumulus --user ana:pw --user bob:pw [--ttl 300]
import http from "node:http";
import crypto from "node:crypto";
import Provider from "oidc-provider";
import { SignJWT, importJWK } from "jose";

function options(argv) {
  const o = { port: 8081, host: "127.0.0.1", realm: "kumulus", client: "kumulus", secret: "kumulus-secret", audience: "kumulus", users: [], ttl: 300 };
  for (let i = 2; i < argv.length; i += 2) {
    const [k, v] = [argv[i].replace(/^--/, ""), argv[i + 1]];
    if (v === undefined) throw new Error(`--${k} needs a value`);
    if (k === "user") o.users.push(v);
    else if (k in o) o[k] = ["port", "ttl"].includes(k) ? Number(v) : v;
    else throw new Error(`unknown option --${k}`);
  }
  return o;
}

const o = options(process.argv);
const users = new Map(o.users.map((u) => {
  const at = u.indexOf(":");
  return [u.slice(0, at), { password: u.slice(at + 1), id: crypto.createHash("sha256").update(u.slice(0, at)).digest("hex").slice(0, 32) }];
}));

const { privateKey } = crypto.generateKeyPairSync("rsa", { modulusLength: 2048 });
const jwk = { ...privateKey.export({ format: "jwk" }), kid: crypto.randomUUID(), use: "sig", alg: "RS256" };
const signingKey = await importJWK(jwk, "RS256");

const mount = `/realms/${o.realm}`;
const issuer = `http://${o.host}:${o.port}${mount}`;
const provider = new Provider(issuer, {
  clients: [{
    client_id: o.client,
    client_secret: o.secret,
    grant_types: ["password", "client_credentials"],
    redirect_uris: [],
    response_types: [],
  }],
  jwks: { keys: [jwk] },
  routes: {
    token: "/protocol/openid-connect/token",
    jwks: "/protocol/openid-connect/certs",
    userinfo: "/protocol/openid-connect/userinfo",
    authorization: "/protocol/openid-connect/auth",
    end_session: "/protocol/openid-connect/logout",
  },
  features: { devInteractions: { enabled: false }, clientCredentials: { enabled: true } },
});

provider.registerGrantType("password", async (ctx) => {
  const { username, password } = ctx.oidc.params;
  const user = users.get(username || "");
  const given = Buffer.from(password || "");
  const expected = Buffer.from(user ? user.password : "no user");
  const ok = user && given.length === expected.length && crypto.timingSafeEqual(given, expected);
  if (!ok) {
    ctx.status = 401;
    ctx.body = { error: "invalid_grant", error_description: "Invalid user credentials" };
    return;
  }
  const now = Math.floor(Date.now() / 1000);
  const token = await new SignJWT({
    typ: "Bearer",
    azp: ctx.oidc.client.clientId,
    preferred_username: username,
    scope: "openid profile",
    realm_access: { roles: ["user"] },
  })
    .setProtectedHeader({ alg: "RS256", kid: jwk.kid, typ: "JWT" })
    .setIssuer(issuer)
    .setSubject(user.id)
    .setAudience(o.audience)
    .setIssuedAt(now)
    .setExpirationTime(now + o.ttl)
    .setJti(crypto.randomUUID())
    .sign(signingKey);
  ctx.body = { access_token: token, token_type: "Bearer", expires_in: o.ttl, scope: "openid profile" };
}, ["username", "password", "scope"]);

const callback = provider.callback();
const server = http.createServer((req, res) => {
  if (!req.url.startsWith(mount + "/") && req.url !== mount) {
    res.writeHead(404, { "content-type": "application/json" });
    res.end(JSON.stringify({ error: "not_found" }));
    return;
  }
  req.originalUrl = req.url;
  req.url = req.url.slice(mount.length) || "/";
  callback(req, res);
});
server.listen(o.port, o.host, () => {
  console.log(`oidc provider listening; issuer ${issuer}`);
});
for (const sig of ["SIGTERM", "SIGINT"]) process.on(sig, () => server.close(() => process.exit(0)));
