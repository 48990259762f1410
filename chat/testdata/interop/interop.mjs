// Interop driver for chat/interop_test.go: reads one JSON request on stdin,
// uses the real nostr-tools to wrap or unwrap a NIP-17 DM, prints JSON.
//   {"op":"wrap","sender_sk":hex,"recipient_pk":hex,"text":str}  -> gift wrap event
//   {"op":"unwrap","recipient_sk":hex,"wrap":event}              -> rumor
import * as nip17 from 'nostr-tools/nip17'

const hexToBytes = (h) => Uint8Array.from(h.match(/../g).map((b) => parseInt(b, 16)))

let input = ''
for await (const chunk of process.stdin) input += chunk
const req = JSON.parse(input)
let out
if (req.op === 'wrap') {
  out = nip17.wrapEvent(hexToBytes(req.sender_sk), { publicKey: req.recipient_pk }, req.text)
} else if (req.op === 'unwrap') {
  out = nip17.unwrapEvent(req.wrap, hexToBytes(req.recipient_sk))
} else {
  throw new Error('unknown op ' + req.op)
}
process.stdout.write(JSON.stringify(out))
