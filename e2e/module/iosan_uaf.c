// SPDX-License-Identifier: GPL-2.0
/*
 * iosan_uaf - ground truth for iosan's end-to-end test.
 *
 * Loaded inside a QEMU guest with an emulated IOMMU, against the first NVMe
 * controller (PCI class 01:08:02). It does its work from module init and
 * always returns 0 (busybox insmod retries a failed finit_module with
 * init_module, which would run the cases twice); the caller rmmods it.
 *
 *   insmod iosan_uaf.ko phase=good   DMA done right: map, unmap, then free
 *   insmod iosan_uaf.ko phase=bug    DMA use-after-free, five ways
 *   insmod iosan_uaf.ko phase=superpage [idle_vendor=.. idle_device=..]
 *                       correct, but hard to replay: an unmanaged domain on an
 *                       idle PCI device, a 2 MiB superpage, a 4 KiB unmap that
 *                       the driver widens to the whole superpage
 *
 * The sizes are in bytes where the DMA API takes bytes, so the same source
 * builds for 4 KiB and 16 KiB page kernels (x86-64 and arm64).
 *
 * Every page that matters is logged on one line a script can parse:
 *
 *   iosan_uaf: GOOD case=<name> dev=<bdf> pfn=0x<hex> npages=<n> dma=0x<hex>
 *   iosan_uaf: LEAK case=<name> dev=<bdf|none> pfn=0x<hex> npages=<n> dma=0x<hex>
 *
 * GOOD pages were unmapped before they were freed: a detector must not
 * report them. LEAK pages were freed (or handed out again) while an IOMMU
 * mapping still covered them: a detector must report every one, against
 * the device named (dev=none: a domain attached to no device).
 */
#include <linux/module.h>
#include <linux/pci.h>
#include <linux/dma-mapping.h>
#include <linux/scatterlist.h>
#include <linux/iommu.h>
#include <linux/gfp.h>
#include <linux/mm.h>
#include <linux/delay.h>
#include <linux/sizes.h>

static char *phase = "good";
module_param(phase, charp, 0444);
MODULE_PARM_DESC(phase, "good or bug");

/* How long a buggy case keeps the stale mapping before tearing it down. */
static unsigned int window_ms = 20;
module_param(window_ms, uint, 0444);
MODULE_PARM_DESC(window_ms, "milliseconds between the early free and the late unmap");

/* The idle device of phase=superpage: QEMU's "edu" device has no driver. */
static unsigned int idle_vendor = 0x1234;
module_param(idle_vendor, uint, 0444);
static unsigned int idle_device = 0x11e8;
module_param(idle_device, uint, 0444);

#define SG_PAGES 4
#define ISLAND_IOVA 0x40000000UL	/* unmanaged domain: 1 GiB, 2 MiB aligned */
#define ISLAND_ORDER ((unsigned int)get_order(SZ_2M))	/* 9 with 4 KiB pages, 7 with 16 KiB */
#define COHERENT_GOOD_BYTES (4 * PAGE_SIZE)
#define COHERENT_BUG_ORDER 1		/* two pages */

static void report(const char *verdict, const char *name, struct device *dev,
		   unsigned long pfn, unsigned long npages, u64 dma)
{
	pr_info("iosan_uaf: %s case=%s dev=%s pfn=0x%lx npages=%lu dma=0x%llx\n",
		verdict, name, dev ? dev_name(dev) : "none", pfn, npages, dma);
}

/*
 * DMA address of the idx-th page-sized CPU entry of a mapped table: the
 * IOMMU path may merge entries, so walk the DMA segments by length.
 */
static u64 sg_page_dma(struct sg_table *sgt, unsigned int idx)
{
	struct scatterlist *sg;
	u64 skip = (u64)idx * PAGE_SIZE;
	int i;

	for_each_sgtable_dma_sg(sgt, sg, i) {
		if (skip < sg_dma_len(sg))
			return sg_dma_address(sg) + skip;
		skip -= sg_dma_len(sg);
	}
	return 0;
}

/* Build and map a table over SG_PAGES separate pages. */
static int sg_setup(struct device *dev, struct sg_table *sgt,
		    struct page **pages, enum dma_data_direction dir)
{
	struct scatterlist *sg;
	int i;

	for (i = 0; i < SG_PAGES; i++) {
		pages[i] = alloc_page(GFP_KERNEL);
		if (!pages[i])
			goto free_pages;
	}
	if (sg_alloc_table(sgt, SG_PAGES, GFP_KERNEL))
		goto free_pages;
	for_each_sg(sgt->sgl, sg, SG_PAGES, i)
		sg_set_page(sg, pages[i], PAGE_SIZE, 0);
	if (dma_map_sgtable(dev, sgt, dir, 0)) {
		sg_free_table(sgt);
		goto free_pages;
	}
	return 0;

free_pages:
	while (i-- > 0)
		__free_page(pages[i]);
	return -ENOMEM;
}

/*
 * A paging domain of our own: map 2 MiB, unmap it in two halves. With bug
 * set, the block is freed between the two unmaps.
 *
 * By default the domain is attached to nothing (VT-d maps and unmaps an
 * unattached domain). Drivers that cannot map before an attach (virtio-iommu
 * oopses in viommu_sync_req) need unmanaged_attach=1: the domain is then
 * attached to the idle device, and the block is mapped as two 1 MiB halves,
 * because an attached domain may offer 2 MiB pages (VT-d) or refuse to split
 * one mapping (virtio-iommu), and either way an unmap of one half would
 * remove both. What is logged as leaked is what the first unmap left.
 */
static bool unmanaged_attach;
module_param(unmanaged_attach, bool, 0444);
MODULE_PARM_DESC(unmanaged_attach, "attach the unmanaged domain to the idle device first");

static struct pci_dev *idle_pci_dev(void)
{
	return pci_get_device(idle_vendor, idle_device, NULL);
}

static void unmanaged_case(struct device *dev, bool bug)
{
	const char *name = bug ? "unmanaged-partial" : "unmanaged";
	struct pci_dev *idle = NULL;
	struct device *owner = NULL;	/* the device the domain is attached to */
	struct iommu_domain *dom;
	struct page *block;
	phys_addr_t phys;
	size_t half = SZ_1M, gone;
	int ret;

	if (unmanaged_attach) {
		idle = idle_pci_dev();
		if (!idle) {
			pr_info("iosan_uaf: SKIP case=%s no idle device %04x:%04x\n",
				name, idle_vendor, idle_device);
			return;
		}
		dev = &idle->dev;
	}
	dom = iommu_paging_domain_alloc(dev);
	if (IS_ERR_OR_NULL(dom)) {
		pr_info("iosan_uaf: SKIP case=%s no paging domain (%ld)\n",
			name, PTR_ERR(dom));
		goto out_dev;
	}
	if (idle) {
		ret = iommu_attach_device(dom, dev);
		if (ret) {
			pr_info("iosan_uaf: SKIP case=%s attach failed (%d)\n", name, ret);
			goto out_domain;
		}
		owner = dev;
	}
	block = alloc_pages(GFP_KERNEL, ISLAND_ORDER);
	if (!block)
		goto out_detach;
	phys = page_to_phys(block);
	if (owner) {
		ret = iommu_map(dom, ISLAND_IOVA, phys, half, IOMMU_READ | IOMMU_WRITE, GFP_KERNEL);
		if (!ret) {
			ret = iommu_map(dom, ISLAND_IOVA + half, phys + half, half,
					IOMMU_READ | IOMMU_WRITE, GFP_KERNEL);
			if (ret)
				iommu_unmap(dom, ISLAND_IOVA, half);
		}
	} else {
		ret = iommu_map(dom, ISLAND_IOVA, phys, SZ_2M,
				IOMMU_READ | IOMMU_WRITE, GFP_KERNEL);
	}
	if (ret) {
		pr_info("iosan_uaf: SKIP case=%s iommu_map failed (%d)\n", name, ret);
		__free_pages(block, ISLAND_ORDER);
		goto out_detach;
	}
	gone = iommu_unmap(dom, ISLAND_IOVA, half);
	if (bug && gone < SZ_2M) {
		/* What the first unmap left is still mapped when the block goes back. */
		__free_pages(block, ISLAND_ORDER);
		report("LEAK", name, owner, page_to_pfn(block) + (gone >> PAGE_SHIFT),
		       (SZ_2M - gone) >> PAGE_SHIFT, ISLAND_IOVA + gone);
		msleep(window_ms);
		gone += iommu_unmap(dom, ISLAND_IOVA + gone, SZ_2M - gone);
	} else {
		if (gone < SZ_2M)
			gone += iommu_unmap(dom, ISLAND_IOVA + gone, SZ_2M - gone);
		__free_pages(block, ISLAND_ORDER);
		report("GOOD", name, owner, page_to_pfn(block), 1UL << ISLAND_ORDER,
		       ISLAND_IOVA);
	}
	pr_info("iosan_uaf: NOTE case=%s unmapped=%zu of %u\n", name, gone, SZ_2M);
out_detach:
	if (owner)
		iommu_detach_device(dom, owner);
out_domain:
	iommu_domain_free(dom);
out_dev:
	if (idle)
		pci_dev_put(idle);
}

static void good_cases(struct device *dev)
{
	struct page *pg, *pages[SG_PAGES];
	struct sg_table sgt;
	dma_addr_t dma;
	void *cpu;
	int i;

	/* map-page: one page through the streaming API */
	pg = alloc_page(GFP_KERNEL);
	if (pg) {
		dma = dma_map_page(dev, pg, 0, PAGE_SIZE, DMA_BIDIRECTIONAL);
		if (!dma_mapping_error(dev, dma)) {
			dma_unmap_page(dev, dma, PAGE_SIZE, DMA_BIDIRECTIONAL);
			report("GOOD", "map-page", dev, page_to_pfn(pg), 1, dma);
		}
		__free_page(pg);
	}

	/* map-sg: four pages through a scatter-gather table */
	if (!sg_setup(dev, &sgt, pages, DMA_TO_DEVICE)) {
		u64 addr[SG_PAGES];

		for (i = 0; i < SG_PAGES; i++)
			addr[i] = sg_page_dma(&sgt, i);
		dma_unmap_sgtable(dev, &sgt, DMA_TO_DEVICE, 0);
		sg_free_table(&sgt);
		for (i = 0; i < SG_PAGES; i++) {
			report("GOOD", "map-sg", dev, page_to_pfn(pages[i]), 1, addr[i]);
			__free_page(pages[i]);
		}
	}

	/* coherent: allocated and released through the DMA API */
	cpu = dma_alloc_coherent(dev, COHERENT_GOOD_BYTES, &dma, GFP_KERNEL);
	if (cpu) {
		/* A blocking allocation may be vmapped: name the pfn only if linear. */
		if (virt_addr_valid(cpu))
			report("GOOD", "coherent", dev, page_to_pfn(virt_to_page(cpu)),
			       COHERENT_GOOD_BYTES >> PAGE_SHIFT, dma);
		dma_free_coherent(dev, COHERENT_GOOD_BYTES, cpu, dma);
	}

	unmanaged_case(dev, false);
}

static void bug_cases(struct device *dev)
{
	struct page *pg, *again, *pages[SG_PAGES];
	struct sg_table sgt;
	dma_addr_t dma;
	void *cpu;
	int i;

	/*
	 * free-no-unmap: the page goes back while mapped and the mapping is
	 * never removed. The next order-0 allocation on this CPU usually gets
	 * the same page back from the per-CPU list.
	 */
	pg = alloc_page(GFP_KERNEL);
	if (pg) {
		dma = dma_map_page(dev, pg, 0, PAGE_SIZE, DMA_BIDIRECTIONAL);
		if (dma_mapping_error(dev, dma)) {
			__free_page(pg);
		} else {
			__free_page(pg);
			report("LEAK", "free-no-unmap", dev, page_to_pfn(pg), 1, dma);
			again = alloc_page(GFP_KERNEL);
			if (again) {
				pr_info("iosan_uaf: NOTE case=free-no-unmap realloc=%s pfn=0x%lx\n",
					again == pg ? "same" : "other", page_to_pfn(again));
				__free_page(again);
			}
		}
	}

	/* late-unmap: an order-2 block freed, its mapping removed later */
	pg = alloc_pages(GFP_KERNEL, 2);
	if (pg) {
		dma = dma_map_page(dev, pg, 0, 4 * PAGE_SIZE, DMA_FROM_DEVICE);
		if (dma_mapping_error(dev, dma)) {
			__free_pages(pg, 2);
		} else {
			__free_pages(pg, 2);
			report("LEAK", "late-unmap", dev, page_to_pfn(pg), 4, dma);
			msleep(window_ms);
			dma_unmap_page(dev, dma, 4 * PAGE_SIZE, DMA_FROM_DEVICE);
		}
	}

	/* sg-early-free: table pages freed before the table is unmapped */
	if (!sg_setup(dev, &sgt, pages, DMA_TO_DEVICE)) {
		for (i = 0; i < SG_PAGES; i++) {
			__free_page(pages[i]);
			report("LEAK", "sg-early-free", dev, page_to_pfn(pages[i]), 1,
			       sg_page_dma(&sgt, i));
		}
		msleep(window_ms);
		dma_unmap_sgtable(dev, &sgt, DMA_TO_DEVICE, 0);
		sg_free_table(&sgt);
	}

	/*
	 * coherent-behind-api: an atomic coherent allocation is physically
	 * contiguous and linearly mapped; give its pages back to the page
	 * allocator directly and never call dma_free_coherent.
	 */
	cpu = dma_alloc_coherent(dev, PAGE_SIZE << COHERENT_BUG_ORDER, &dma, GFP_ATOMIC);
	if (cpu && virt_addr_valid(cpu)) {
		pg = virt_to_page(cpu);
		__free_pages(pg, COHERENT_BUG_ORDER);
		report("LEAK", "coherent-behind-api", dev, page_to_pfn(pg),
		       1UL << COHERENT_BUG_ORDER, dma);
	} else if (cpu) {
		pr_info("iosan_uaf: SKIP case=coherent-behind-api buffer is not linear\n");
		dma_free_coherent(dev, PAGE_SIZE << COHERENT_BUG_ORDER, cpu, dma);
	}

	unmanaged_case(dev, true);
}

/*
 * superpage: a correct pattern. An unmanaged domain attached to an idle
 * device, so that the driver offers 2 MiB pages (VT-d sets its page sizes
 * from the IOMMU it is attached to); a 2 MiB-aligned block mapped as one
 * superpage; an unmap of its first 4 KiB, which removes the whole
 * superpage (the kernel's unmap may remove more than asked and says so in
 * its return value); then the block is freed with nothing mapped. Nothing
 * may be reported here.
 */
static void superpage_case(void)
{
	struct pci_dev *pdev;
	struct iommu_domain *dom;
	struct device *dev;
	struct page *block;
	size_t gone, rest = 0;
	int ret;

	pdev = idle_pci_dev();
	if (!pdev) {
		pr_info("iosan_uaf: SKIP case=superpage no idle device %04x:%04x\n",
			idle_vendor, idle_device);
		return;
	}
	dev = &pdev->dev;
	pr_info("iosan_uaf: NOTE case=superpage idle dev=%s driver=%s\n", dev_name(dev),
		dev->driver ? dev->driver->name : "none");
	dom = iommu_paging_domain_alloc(dev);
	if (IS_ERR_OR_NULL(dom)) {
		pr_info("iosan_uaf: SKIP case=superpage no paging domain (%ld)\n", PTR_ERR(dom));
		goto out_dev;
	}
	ret = iommu_attach_device(dom, dev);
	if (ret) {
		pr_info("iosan_uaf: SKIP case=superpage attach failed (%d)\n", ret);
		goto out_domain;
	}
	pr_info("iosan_uaf: NOTE case=superpage pgsize_bitmap=0x%lx\n", dom->pgsize_bitmap);
	if (!(dom->pgsize_bitmap & SZ_2M)) {
		pr_info("iosan_uaf: SKIP case=superpage the domain offers no 2 MiB pages\n");
		goto out_detach;
	}
	block = alloc_pages(GFP_KERNEL, ISLAND_ORDER);
	if (!block)
		goto out_detach;
	ret = iommu_map(dom, ISLAND_IOVA, page_to_phys(block), SZ_2M,
			IOMMU_READ | IOMMU_WRITE, GFP_KERNEL);
	if (ret) {
		pr_info("iosan_uaf: SKIP case=superpage iommu_map failed (%d)\n", ret);
		__free_pages(block, ISLAND_ORDER);
		goto out_detach;
	}
	gone = iommu_unmap(dom, ISLAND_IOVA, SZ_4K);
	/* Only if the driver removed less than the superpage is the rest still mapped. */
	if (gone < SZ_2M)
		rest = iommu_unmap(dom, ISLAND_IOVA + gone, SZ_2M - gone);
	pr_info("iosan_uaf: NOTE case=superpage unmap size=%u unmapped=%zu then %zu\n",
		SZ_4K, gone, rest);
	__free_pages(block, ISLAND_ORDER);
	report("GOOD", "superpage", dev, page_to_pfn(block), 1UL << ISLAND_ORDER, ISLAND_IOVA);
out_detach:
	iommu_detach_device(dom, dev);
out_domain:
	iommu_domain_free(dom);
out_dev:
	pci_dev_put(pdev);
}

static int __init iosan_uaf_init(void)
{
	struct pci_dev *pdev;
	struct device *dev;

	/* PCI_CLASS_STORAGE_EXPRESS is the full class code 0x010802 */
	pdev = pci_get_class(PCI_CLASS_STORAGE_EXPRESS, NULL);
	if (!pdev) {
		pr_err("iosan_uaf: ERROR no NVMe controller found\n");
		return 0;
	}
	dev = &pdev->dev;
	pr_info("iosan_uaf: BEGIN phase=%s dev=%s driver=%s\n", phase,
		dev_name(dev), dev->driver ? dev->driver->name : "none");
	if (!strcmp(phase, "good"))
		good_cases(dev);
	else if (!strcmp(phase, "bug"))
		bug_cases(dev);
	else if (!strcmp(phase, "superpage"))
		superpage_case();
	else
		pr_err("iosan_uaf: ERROR unknown phase=%s\n", phase);
	pr_info("iosan_uaf: END phase=%s\n", phase);
	pci_dev_put(pdev);
	return 0;
}

static void __exit iosan_uaf_exit(void)
{
}

module_init(iosan_uaf_init);
module_exit(iosan_uaf_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("iosan end-to-end test: correct DMA and injected DMA use-after-free");
