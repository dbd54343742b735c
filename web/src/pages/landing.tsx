import type { PageProps } from '../app';
import { PageTitle } from '../ui';

export default function Landing(_: PageProps) {
  return <PageTitle>swarmstation</PageTitle>;
}
