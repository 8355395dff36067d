import Link from "next/link";

export async function getServerSideProps({ query }) {
  return { props: { n: Number(query.n) || 0 } };
}

export default function PagesSsr({ n }) {
  return (
    <p>
      pages router, n = {n} <Link href="/">home</Link>
    </p>
  );
}
