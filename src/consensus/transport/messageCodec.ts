// The binary frames of a Raft stream (docs/architecture.md, "Raft wire format"). A frame is a
// little-endian u32 length, then a kind byte, then the body. A message body holds a type byte, a
// presence-flags byte, the ids, the numbers as float64 (exact for every safe integer) and each
// entry's data as raw UTF-8 bytes: no JSON text, no escaping, no schema walk. The decoder checks
// exactly what messageSchema checks (tests/security/raftFrames.property.test.ts holds the two
// together), so nothing malformed ever reaches the core. MsgSnap never travels in a frame: a
// snapshot has its own request (/raft/messages, RAFT_SNAPSHOT_HEADER). Strings travel as UTF-8, so
// a lone surrogate would not survive; entry data and contexts are JSON.stringify's output, which
// never holds one.

import { isUtf8 } from 'node:buffer';
import { type Entry, MESSAGE_TYPES, type Message } from '../types.ts';
import {
  MAX_CONTEXT_CHARS,
  MAX_ENTRIES_PER_MESSAGE,
  MAX_ENTRY_DATA_CHARS,
  MAX_NODE_ID_CHARS,
  MAX_RAFT_BODY_BYTES,
  MAX_TERM,
} from './messageSchema.ts';

/** Largest frame body either side writes or reads. */
export const MAX_FRAME_BYTES = MAX_RAFT_BODY_BYTES;
export const FRAME_HEADER_BYTES = 5;
export const FRAME_MESSAGE = 1;
/** Only on a response stream: `{ error: { code, message } }` as JSON, after which the stream ends. */
export const FRAME_ERROR = 2;

const F_LOG_TERM = 1;
const F_INDEX = 2;
const F_COMMIT = 4;
const F_REJECT_HINT = 8;
const F_REJECT = 16;
const F_REJECT_TRUE = 32;
const F_ENTRIES = 64;
const F_CONTEXT = 128;

const TYPE_CODE = new Map<string, number>(MESSAGE_TYPES.map((t, i) => [t, i]));

/** True when `msg` travels in a frame; a snapshot goes on a request of its own. */
export function isFramed(msg: Message): boolean {
  return msg.type !== 'MsgSnap' && msg.snapshot === undefined;
}

/** The frame for `msg` (which must satisfy isFramed). */
export function encodeMessageFrame(msg: Message): Buffer {
  let flags = 0;
  let size = FRAME_HEADER_BYTES + 2 + 2 + Buffer.byteLength(msg.from) + 2 + Buffer.byteLength(msg.to) + 8;
  const numbers: [number, number | undefined][] = [
    [F_LOG_TERM, msg.logTerm],
    [F_INDEX, msg.index],
    [F_COMMIT, msg.commit],
    [F_REJECT_HINT, msg.rejectHint],
  ];
  for (const [flag, v] of numbers) {
    if (v !== undefined) {
      flags |= flag;
      size += 8;
    }
  }
  if (msg.reject !== undefined) flags |= msg.reject ? F_REJECT | F_REJECT_TRUE : F_REJECT;
  const data = msg.entries?.map((e) => Buffer.from(e.data, 'utf8'));
  if (msg.entries !== undefined) {
    flags |= F_ENTRIES;
    size += 4;
    for (const d of data!) size += 8 + 8 + 1 + 4 + d.length;
  }
  if (msg.context !== undefined) {
    flags |= F_CONTEXT;
    size += 4 + Buffer.byteLength(msg.context);
  }
  const buf = Buffer.allocUnsafe(size);
  buf.writeUInt32LE(size - 4, 0);
  buf[4] = FRAME_MESSAGE;
  buf[5] = TYPE_CODE.get(msg.type)!;
  buf[6] = flags;
  let at = writeShortString(buf, 7, msg.from);
  at = writeShortString(buf, at, msg.to);
  at = buf.writeDoubleLE(msg.term, at);
  for (const [, v] of numbers) if (v !== undefined) at = buf.writeDoubleLE(v, at);
  if (msg.entries !== undefined) at = writeEntries(buf, at, msg.entries, data!);
  if (msg.context !== undefined) {
    const n = buf.write(msg.context, at + 4, 'utf8');
    buf.writeUInt32LE(n, at);
    at += 4 + n;
  }
  return buf;
}

function writeShortString(buf: Buffer, at: number, s: string): number {
  const n = buf.write(s, at + 2, 'utf8');
  buf.writeUInt16LE(n, at);
  return at + 2 + n;
}

function writeEntries(buf: Buffer, at: number, entries: Entry[], data: Buffer[]): number {
  let p = buf.writeUInt32LE(entries.length, at);
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i]!;
    p = buf.writeDoubleLE(e.term, p);
    p = buf.writeDoubleLE(e.index, p);
    buf[p++] = e.type === 'confChange' ? 1 : 0;
    p = buf.writeUInt32LE(data[i]!.length, p);
    p += data[i]!.copy(buf, p);
  }
  return p;
}

/** An error frame: what a stream's reader is told before the stream ends. */
export function encodeErrorFrame(code: string, message: string): Buffer {
  const json = Buffer.from(JSON.stringify({ error: { code, message } }), 'utf8');
  const buf = Buffer.allocUnsafe(FRAME_HEADER_BYTES + json.length);
  buf.writeUInt32LE(1 + json.length, 0);
  buf[4] = FRAME_ERROR;
  json.copy(buf, FRAME_HEADER_BYTES);
  return buf;
}

export class FrameError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'FrameError';
  }
}

/** Reads one message body (a frame less its header); throws FrameError naming what is wrong. */
export function decodeMessage(body: Buffer): Message {
  const r = new BodyReader(body);
  const type = MESSAGE_TYPES[r.u8()];
  if (type === undefined) throw new FrameError('unknown message type');
  if (type === 'MsgSnap') throw new FrameError('a MsgSnap travels on its own request, not in a frame');
  const flags = r.u8();
  const msg: Message = { type, from: r.nodeId('from'), to: r.nodeId('to'), term: r.term('term') };
  if (flags & F_LOG_TERM) msg.logTerm = r.term('logTerm');
  if (flags & F_INDEX) msg.index = r.count('index');
  if (flags & F_COMMIT) msg.commit = r.count('commit');
  if (flags & F_REJECT_HINT) msg.rejectHint = r.count('rejectHint');
  if (flags & F_REJECT) msg.reject = (flags & F_REJECT_TRUE) !== 0;
  else if (flags & F_REJECT_TRUE) throw new FrameError('reject value without reject');
  if (flags & F_ENTRIES) msg.entries = r.entries();
  if (flags & F_CONTEXT) msg.context = r.text('context', r.u32(), MAX_CONTEXT_CHARS);
  if (!r.atEnd()) throw new FrameError('bytes after the message');
  return msg;
}

class BodyReader {
  private at = 0;
  constructor(private readonly buf: Buffer) {}

  private need(n: number, what: string): void {
    if (this.at + n > this.buf.length) throw new FrameError(`frame ends inside ${what}`);
  }
  atEnd(): boolean {
    return this.at === this.buf.length;
  }
  u8(): number {
    this.need(1, 'a byte');
    return this.buf[this.at++]!;
  }
  u32(): number {
    this.need(4, 'a length');
    const v = this.buf.readUInt32LE(this.at);
    this.at += 4;
    return v;
  }
  count(what: string, max = Number.MAX_SAFE_INTEGER): number {
    this.need(8, what);
    const v = this.buf.readDoubleLE(this.at);
    this.at += 8;
    if (!Number.isSafeInteger(v) || v < 0 || v > max)
      throw new FrameError(`${what}: not an integer in 0..${max}`);
    return v + 0; // -0 becomes 0, as JSON would have it
  }
  term(what: string): number {
    return this.count(what, MAX_TERM);
  }
  text(what: string, bytes: number, maxChars: number): string {
    this.need(bytes, what);
    const raw = this.buf.subarray(this.at, this.at + bytes);
    this.at += bytes;
    if (!isUtf8(raw)) throw new FrameError(`${what}: not UTF-8`);
    const s = raw.toString('utf8');
    if (s.length > maxChars) throw new FrameError(`${what}: longer than ${maxChars} characters`);
    return s;
  }
  nodeId(what: string): string {
    this.need(2, what);
    const bytes = this.buf.readUInt16LE(this.at);
    this.at += 2;
    const s = this.text(what, bytes, MAX_NODE_ID_CHARS);
    if (s.length === 0) throw new FrameError(`${what}: empty`);
    return s;
  }
  entries(): Entry[] {
    const n = this.u32();
    if (n > MAX_ENTRIES_PER_MESSAGE) throw new FrameError(`more than ${MAX_ENTRIES_PER_MESSAGE} entries`);
    const out: Entry[] = [];
    for (let i = 0; i < n; i++) {
      const term = this.term('entry term');
      const index = this.count('entry index');
      const code = this.u8();
      if (code > 1) throw new FrameError('entry type: neither normal nor confChange');
      const data = this.text('entry data', this.u32(), MAX_ENTRY_DATA_CHARS);
      out.push({ term, index, type: code === 1 ? 'confChange' : 'normal', data });
    }
    return out;
  }
}

export type Frame = { kind: typeof FRAME_MESSAGE; body: Buffer } | { kind: typeof FRAME_ERROR; body: Buffer };

/**
 * Cuts a byte stream into frames. `push` a chunk, then take every complete frame with `next()`;
 * a length over MAX_FRAME_BYTES, or a kind not known, throws FrameError (the stream is then done).
 */
export class FrameSplitter {
  private chunks: Buffer[] = [];
  private buffered = 0;

  constructor(private readonly maxFrameBytes = MAX_FRAME_BYTES) {}

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
  }

  next(): Frame | null {
    if (this.buffered < 4) return null;
    const head = this.peekHead();
    const len = head.readUInt32LE(0);
    if (len < 1 || len > this.maxFrameBytes) throw new FrameError(`frame length ${len} out of bounds`);
    if (this.buffered < 4 + len) return null;
    const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.buffered);
    const kind = all[4]!;
    if (kind !== FRAME_MESSAGE && kind !== FRAME_ERROR) throw new FrameError(`unknown frame kind ${kind}`);
    const body = all.subarray(FRAME_HEADER_BYTES, 4 + len);
    const rest = all.subarray(4 + len);
    this.chunks = rest.length > 0 ? [rest] : [];
    this.buffered = rest.length;
    return { kind, body };
  }

  private peekHead(): Buffer {
    const first = this.chunks[0]!;
    if (first.length >= 5 || this.chunks.length === 1) return first;
    const all = Buffer.concat(this.chunks, this.buffered);
    this.chunks = [all];
    return all;
  }
}
