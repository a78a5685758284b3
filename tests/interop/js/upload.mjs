// Upload a file with tus-js-client through SigningHttpStack, stop after the
// first chunk ("interrupted"), then resume with a new Upload from the server's
// offset. Prints {"url": ..., "firstOffset": ..., "finalOffset": ...} as JSON.
// Usage: node upload.mjs ENDPOINT FILE CHUNK_BYTES  (key in EXCHANGE_SEED_HEX, EXCHANGE_KEYID)
import { readFileSync } from 'node:fs'
import * as tus from 'tus-js-client'
import { SigningHttpStack } from './exchange-sign.mjs'

const [endpoint, file, chunk] = process.argv.slice(2)
const data = readFileSync(file)
const httpStack = new SigningHttpStack(process.env.EXCHANGE_SEED_HEX, process.env.EXCHANGE_KEYID)
const common = { httpStack, chunkSize: Number(chunk), retryDelays: [], storeFingerprintForResuming: false }

function run (options) {
  return new Promise((resolve, reject) => {
    const upload = new tus.Upload(data, {
      ...common,
      ...options,
      onError: reject,
      onSuccess: () => resolve(upload),
      onChunkComplete: (size, sent) => {
        if (options.stopAfterFirst) { upload.abort().then(() => resolve(upload)) }
      }
    })
    upload.start()
  })
}

const first = await run({ endpoint, metadata: { filename: 'evidence.age' }, stopAfterFirst: true })
const firstOffset = first._offset
const resumed = await run({ uploadUrl: first.url })
console.log(JSON.stringify({ url: first.url, firstOffset, finalOffset: resumed._offset }))
