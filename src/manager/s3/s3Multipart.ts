// S3 multipart uploads: create, upload part, list parts, abort, complete. Parts are spooled on the
// leader (s3Spool.ts); Complete streams them, in order, through the same path as a PutObject.

import { createHash } from 'node:crypto';
import { S3Error } from './s3Errors.ts';
import {
  checkDigests,
  etagOf,
  MAX_XML_BODY,
  mtimeOf,
  multipartEtag,
  noBody,
  type ObjectDeps,
  type ObjectOperation,
  readAll,
  requireWritableName,
  storeSpooled,
  xmlResponse,
} from './s3Objects.ts';
import { queryValue, type S3Request } from './s3Request.ts';
import { fileChunks, MAX_PARTS, type UploadInfo } from './s3Spool.ts';
import { el, elements, isoTime, S3_NS, xmlUnescape } from './s3Xml.ts';

/** The upload the request's `uploadId` names, checked to be one of this bucket and key. */
async function namedUpload(
  deps: ObjectDeps,
  req: S3Request,
  bucket: string,
  key: string,
): Promise<{ uploadId: string; info: UploadInfo }> {
  const uploadId = queryValue(req.query, 'uploadId') ?? '';
  return { uploadId, info: await deps.spool.info(uploadId, bucket, key) };
}

export const createUpload: ObjectOperation = async (deps, req, bucket, key) => {
  await requireWritableName(deps, bucket, key);
  deps.images.requireLeader();
  deps.images.requireDiskRoom();
  const uploadId = await deps.spool.create({
    bucket,
    key,
    mtime: mtimeOf(req.headers),
    initiated: Date.now(),
  });
  return xmlResponse(
    `<InitiateMultipartUploadResult xmlns="${S3_NS}">${el('Bucket', bucket)}${el('Key', key)}` +
      `${el('UploadId', uploadId)}</InitiateMultipartUploadResult>`,
  );
};

export const uploadPart: ObjectOperation = async (deps, req, bucket, key) => {
  const { uploadId } = await namedUpload(deps, req, bucket, key);
  const raw = queryValue(req.query, 'partNumber') ?? '';
  const partNumber = /^\d{1,5}$/.test(raw) ? Number(raw) : 0;
  if (partNumber < 1 || partNumber > MAX_PARTS) {
    throw new S3Error('InvalidArgument', `partNumber must be 1 to ${MAX_PARTS}`);
  }
  // A part is spooled on this manager's disk.
  deps.images.requireDiskRoom();
  const spooled = await deps.spool.putPart(
    uploadId,
    partNumber,
    req.body ?? noBody(),
    deps.images.maxImageBytes,
  );
  try {
    checkDigests(req, spooled);
  } catch (err) {
    await deps.spool.discard(spooled.path);
    throw err;
  }
  return new Response(null, { status: 200, headers: { etag: `"${spooled.md5}"` } });
};

export const listParts: ObjectOperation = async (deps, req, bucket, key) => {
  const { uploadId } = await namedUpload(deps, req, bucket, key);
  const parts = (await deps.spool.parts(uploadId))
    .map(
      (p) =>
        `<Part>${el('PartNumber', p.partNumber)}${el('LastModified', isoTime(p.lastModified))}` +
        `${el('ETag', `"${p.etag}"`)}${el('Size', p.size)}</Part>`,
    )
    .join('');
  return xmlResponse(
    `<ListPartsResult xmlns="${S3_NS}">${el('Bucket', bucket)}${el('Key', key)}${el('UploadId', uploadId)}` +
      `${el('StorageClass', 'STANDARD')}${el('MaxParts', MAX_PARTS)}${el('IsTruncated', false)}${parts}</ListPartsResult>`,
  );
};

export const abortUpload: ObjectOperation = async (deps, req, bucket, key) => {
  const { uploadId } = await namedUpload(deps, req, bucket, key);
  await deps.spool.remove(uploadId);
  return new Response(null, { status: 204 });
};

/** The parts Complete names, in order, each matching a part uploaded with that ETag. */
async function chosenParts(deps: ObjectDeps, uploadId: string, xml: string) {
  const uploaded = new Map((await deps.spool.parts(uploadId)).map((p) => [p.partNumber, p]));
  const chosen = elements(xml, 'Part').map((part) => ({
    partNumber: Number(xmlUnescape(elements(part, 'PartNumber')[0] ?? '').trim()),
    etag: xmlUnescape(elements(part, 'ETag')[0] ?? '')
      .trim()
      .replace(/"/g, ''),
  }));
  if (chosen.length === 0) throw new S3Error('MalformedXML', 'CompleteMultipartUpload lists no part');
  let previous = 0;
  return chosen.map((c) => {
    if (!(c.partNumber > previous))
      throw new S3Error('InvalidPartOrder', 'parts must be listed in ascending order');
    previous = c.partNumber;
    const part = uploaded.get(c.partNumber);
    if (part === undefined || part.etag !== c.etag) {
      throw new S3Error('InvalidPart', `part ${c.partNumber} was not uploaded with ETag ${c.etag}`);
    }
    return part;
  });
}

export const completeUpload: ObjectOperation = async (deps, req, bucket, key) => {
  const { uploadId, info } = await namedUpload(deps, req, bucket, key);
  const parts = await chosenParts(deps, uploadId, await readAll(req.body, MAX_XML_BODY));
  const size = parts.reduce((n, p) => n + p.size, 0);
  if (size > deps.images.maxImageBytes) {
    throw new S3Error('EntityTooLarge', `the object exceeds the limit of ${deps.images.maxImageBytes} bytes`);
  }
  const paths = parts.map((p) => deps.spool.partPath(uploadId, p.partNumber));
  const sha256 = await sha256Of(paths);
  const outcome = await storeSpooled(
    deps,
    { bucket, key, client: req.client },
    { paths, size, sha256 },
    info.mtime,
    multipartEtag(parts.map((p) => p.etag)),
  );
  await deps.spool.remove(uploadId);
  return xmlResponse(
    `<CompleteMultipartUploadResult xmlns="${S3_NS}">${el('Bucket', bucket)}${el('Key', key)}` +
      `${el('ETag', `"${etagOf(outcome.name)}"`)}</CompleteMultipartUploadResult>`,
  );
};

async function sha256Of(paths: string[]): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of fileChunks(paths)) hash.update(chunk);
  return hash.digest('hex');
}
