import Link from "next/link";

export const dynamic = "force-dynamic";

export default function Home() {
  return (
    <main>
      <h1>warm</h1>
      <p>{new Date().toISOString()}</p>
      <Link href="/pages-ssr?n=2">pages</Link>
    </main>
  );
}
