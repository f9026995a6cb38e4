/** What the Query endpoint tests of both databases share. */

/**
 * Rows compared by `price` in direction `dir` (1 ascending, -1 descending) as Postgres orders
 * them: NULLs last ascending and first descending, ties broken by `id` ascending.
 */
export function byPrice(dir: 1 | -1) {
  return (a: Record<string, unknown>, b: Record<string, unknown>): number => {
    const [x, y] = [a.price === null ? null : Number(a.price), b.price === null ? null : Number(b.price)];
    if (x === y) return (a.id as number) - (b.id as number);
    if (x === null) return dir; // NULLs last ascending, first descending.
    if (y === null) return -dir;
    return dir * (x - y);
  };
}
