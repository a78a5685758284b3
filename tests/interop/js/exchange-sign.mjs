// A tus-js-client httpStack that signs every request for an exchange server:
// RFC 9421 (Ed25519, keyid = participant id) with the body's RFC 9530
// Content-Digest covered. Node's own crypto only; wraps the stock NodeHttpStack.
//
//   import { SigningHttpStack } from './exchange-sign.mjs'
//   new tus.Upload(buffer, { endpoint, httpStack: new SigningHttpStack(seed, keyid) })
//
// The server requires @method, @target-uri and every one of PROFILE_HEADERS
// the request carries, plus created, expires, keyid and nonce.
import { createHash, createPrivateKey, randomBytes, sign } from 'node:crypto'
import { DefaultHttpStack } from 'tus-js-client'

const PROFILE_HEADERS = ['content-digest', 'content-type', 'content-length', 'upload-offset',
  'upload-length', 'upload-metadata', 'tus-resumable', 'range', 'last-event-id']
const PKCS8_ED25519_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex')
const LIFETIME_S = 60

function sfString (text) {
  if (!/^[\x20-\x7e]*$/.test(text)) throw new Error('not an sf-string: ' + text)
  return '"' + text.replace(/\\/g, '\\\\').replace(/"/g, '\\"') + '"'
}

export function signHeaders ({ key, keyid, method, url, headers, now }) {
  const lower = Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), String(v)]))
  const covered = ['@method', '@target-uri', ...PROFILE_HEADERS.filter((h) => h in lower)]
  const created = now ?? Math.floor(Date.now() / 1000)
  const params = `(${covered.map(sfString).join(' ')});created=${created};` +
    `expires=${created + LIFETIME_S};keyid=${sfString(keyid)};` +
    `nonce=${sfString(randomBytes(18).toString('base64url'))};alg="ed25519"`
  const value = (name) => name === '@method' ? method.toUpperCase()
    : name === '@target-uri' ? url : lower[name].trim()
  const base = covered.map((n) => `${sfString(n)}: ${value(n)}`).join('\n') +
    `\n"@signature-params": ${params}`
  const signature = sign(null, Buffer.from(base, 'ascii'), key).toString('base64')
  return { 'Signature-Input': `sig1=${params}`, Signature: `sig1=:${signature}:` }
}

class SigningRequest {
  constructor (inner, stack) { this._inner = inner; this._stack = stack }
  getMethod () { return this._inner.getMethod() }
  getURL () { return this._inner.getURL() }
  setHeader (name, value) { this._inner.setHeader(name, value) }
  getHeader (name) { return this._inner.getHeader(name) }
  setProgressHandler (handler) { this._inner.setProgressHandler(handler) }
  abort () { return this._inner.abort() }
  getUnderlyingObject () { return this._inner.getUnderlyingObject() }

  send (body = null) {
    const method = this.getMethod().toUpperCase()
    if (body instanceof Uint8Array) {
      this.setHeader('Content-Length', String(body.length))
      if (body.length > 0) {
        const digest = createHash('sha256').update(body).digest('base64')
        this.setHeader('Content-Digest', `sha-256=:${digest}:`)
      }
    } else if (body !== null && body !== undefined) {
      throw new Error('SigningHttpStack signs Buffer bodies (pass a Buffer to tus.Upload)')
    } else if (!['GET', 'HEAD', 'DELETE', 'OPTIONS'].includes(method)) {
      this.setHeader('Content-Length', '0')
    }
    const headers = { ...this._inner._headers }
    const signed = signHeaders({ key: this._stack.key, keyid: this._stack.keyid, method,
      url: this.getURL(), headers })
    for (const [name, value] of Object.entries(signed)) this.setHeader(name, value)
    return this._inner.send(body)
  }
}

export class SigningHttpStack {
  constructor (seedHex, keyid) {
    this.key = createPrivateKey({ key: Buffer.concat([PKCS8_ED25519_PREFIX, Buffer.from(seedHex, 'hex')]),
      format: 'der', type: 'pkcs8' })
    this.keyid = keyid
    this._inner = new DefaultHttpStack()
  }

  createRequest (method, url) { return new SigningRequest(this._inner.createRequest(method, url), this) }
  getName () { return 'SigningHttpStack' }
}
