// The one line a manager or worker prints when its disk stops it. LevelDB refuses to open with
// "Database failed to open" and keeps the reason (a full disk, a permission, a bad file) in the
// error's cause; a line without it sent an operator to the logs to learn that the disk was full.

/** The error and the causes it wraps, outermost first (a few levels: causes never form a cycle here). */
function causeChain(err: unknown): unknown[] {
  const chain: unknown[] = [];
  for (let e = err; e !== undefined && e !== null && chain.length < 8; e = (e as { cause?: unknown }).cause) {
    chain.push(e);
    if (typeof e !== 'object') break;
  }
  return chain;
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** The disk is full: ENOSPC from the filesystem, or LevelDB's IO error, which names it only in its text. */
export function isDiskFull(err: unknown): boolean {
  return causeChain(err).some(
    (e) =>
      (typeof e === 'object' && e !== null && (e as { code?: unknown }).code === 'ENOSPC') ||
      /No space left on device/i.test(messageOf(e)),
  );
}

/** The message, followed by each cause's that it does not already hold. */
export function messageWithCauses(err: unknown): string {
  let text = '';
  for (const e of causeChain(err)) {
    const m = messageOf(e);
    if (!text.includes(m)) text = text === '' ? m : `${text}: ${m}`;
  }
  return text;
}

/**
 * Why a process holding `dataDir` could not go on, for its one plain line: a full disk said in
 * words, with the folder to free space in, else the error with its causes.
 */
export function describeStorageFailure(err: unknown, dataDir: string): string {
  if (isDiskFull(err)) {
    return `the disk holding ${dataDir} is full (No space left on device): free space there; it cannot run until then`;
  }
  return messageWithCauses(err);
}
