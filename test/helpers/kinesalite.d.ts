/** kinesalite ships no types: the part the tests use. */
declare module 'kinesalite' {
  import type { Server } from 'node:http';
  interface KinesaliteOptions {
    ssl?: boolean;
    path?: string;
    createStreamMs?: number;
    deleteStreamMs?: number;
    updateStreamMs?: number;
    shardLimit?: number;
  }
  export default function kinesalite(options?: KinesaliteOptions): Server;
}
