/**
 * The hash embedder's thread (./hash.ts): embeds a batch of texts (sent joined, with their
 * lengths: one string copies much faster between threads than many) and answers their vectors,
 * row after row, in one transferred buffer.
 */
import { parentPort } from 'node:worker_threads';
import { lowerThreadPriority } from '../thread.js';
import { hashVector, tokenize } from './hash.js';

lowerThreadPriority(5);

parentPort!.on('message', ({ id, joined, lengths, dimensions }: { id: number; joined: string; lengths: Uint32Array; dimensions: number }) => {
  const vectors = new Float32Array(lengths.length * dimensions);
  let at = 0;
  lengths.forEach((length, i) => {
    vectors.set(hashVector(tokenize(joined.slice(at, at + length)), dimensions), i * dimensions);
    at += length;
  });
  parentPort!.postMessage({ id, result: vectors }, [vectors.buffer]);
});
