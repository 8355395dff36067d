export const dynamic = "force-dynamic";

export async function GET(request) {
  return Response.json({ hello: "warm", url: request.nextUrl.pathname });
}
